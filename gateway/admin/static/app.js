// The gateway console: reads the admin API (same origin) and draws it. No build step, no CDN.
"use strict";

const COLORS = ["#2f5fb3", "#d2691e", "#1f8a4c", "#8e44ad", "#c23b32", "#16a2b8", "#7f8c8d", "#b7791f"];
const REFRESH_MS = 1000;
let activeTab = "services";
let timer = null;
// Who we are (GET /session): the scope, and with a session cookie the CSRF token that every
// change sends back in X-CSRF-Token (a page of another site can neither read nor send it).
let session = {scope: null, via: null, csrf_token: null};

// -- small DOM helpers (text is always set as text: nothing from the API becomes markup) ----

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function signIn() {
  location.replace("/login");
}

async function api(path) {
  const resp = await fetch(path, {cache: "no-store"});
  if (resp.status === 401) { signIn(); throw new Error("signed out"); }
  if (!resp.ok && resp.status !== 503) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

// A change (POST/PUT/DELETE): the answer, or the gateway's reason for refusing it, is shown.
async function change(method, path, body) {
  const headers = {};
  if (session.csrf_token) headers["X-CSRF-Token"] = session.csrf_token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {method, headers, cache: "no-store",
                                  body: body === undefined ? undefined : JSON.stringify(body)});
  if (resp.status === 401) { signIn(); return null; }
  const answer = await resp.json().catch(() => ({error: `HTTP ${resp.status}`}));
  const box = document.getElementById("action-result");
  box.className = "action-result " + (resp.ok ? "ok" : "error");
  box.dataset.status = String(resp.status);
  box.textContent = resp.ok ? `${method} ${path}: done (config ${answer.version || "-"})`
                            : `${method} ${path} refused (${resp.status}): ${answer.error}`;
  return resp.ok ? answer : null;
}

async function loadSession() {
  const resp = await fetch("/session", {cache: "no-store"});
  if (resp.status === 401) { signIn(); return false; }
  session = await resp.json();
  const scope = document.getElementById("scope");
  scope.dataset.scope = session.scope || "";
  scope.textContent = session.via === "open" ? "no token (loopback)" : `${session.scope} access`;
  document.getElementById("logout").hidden = session.via !== "session";
  return true;
}

const pct = x => (x * 100).toFixed(1) + "%";
const num = x => (x === null || x === undefined) ? "-" : String(x);

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 120) return `${seconds.toFixed(0)}s ago`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(0)}m ago`;
  return `${(seconds / 3600).toFixed(1)}h ago`;
}

function badge(text, kind) {
  return el("span", {class: `badge ${kind}`, text});
}

function stateBadge(state) {
  return badge(state, state === "synced" ? "ok" : state === "stale" || state === "starting" ? "warn" : "bad");
}

// A cluster as a health domain (gateway/health/domains.py): healthy, degraded, draining,
// drained, control-plane-lost (its API server unreachable: endpoints kept, checks decide).
function domainBadge(state) {
  if (!state) return badge("no services", "muted");
  const kind = state === "healthy" ? "ok" : state === "drained" ? "bad" : "warn";
  const node = badge(state, kind);
  node.classList.add("domain");
  node.dataset.domain = state;
  return node;
}

function shareBar(share) {
  const bar = el("span", {class: "share"}, el("span"));
  bar.firstChild.style.width = pct(share);
  return el("span", {}, bar, pct(share));
}

function matchText(m) {
  const [kind, value] = Object.entries(m.path)[0];
  let text = kind === "prefix" ? `${value}*` : kind === "exact" ? value : `~${value}`;
  if (m.hosts.length) text = m.hosts.join(",") + text;
  if (m.methods.length) text = m.methods.join(",") + " " + text;
  for (const h of m.headers) text += ` [${h.name}${"exact" in h ? "=" + h.exact : "regex" in h ? "~" + h.regex : h.present ? "" : " absent"}]`;
  return text;
}

// -- header ----------------------------------------------------------------------------------

async function refreshStatus() {
  const box = document.getElementById("status");
  try {
    const s = await api("/status");
    box.replaceChildren(
      el("b", {text: `v${s.version}`}), ` up ${s.uptime_s.toFixed(0)}s · `,
      s.ready ? badge("ready", "ok") : badge("not ready", "bad"),
      ` · config ${s.config.version} · snapshot v${s.snapshot.version} · `,
      `${s.stats.requests || 0} requests · ${s.connections} connections`,
      ...statusWriter(s.gateway_api));
  } catch (e) {
    box.replaceChildren(el("span", {class: "error", text: `admin API unreachable (${e.message})`}));
  }
}

// Gateway API: whether this replica writes status, and who does (the Lease's holder).
function statusWriter(g) {
  if (!g) return [];
  const election = g.leader_election;
  const who = election ? (election.leader || "none yet") : "every replica (leader election off)";
  return [" · status writer: ", g.writes_status ? badge("this replica", "ok") : el("span", {text: who})];
}

// -- tabs ------------------------------------------------------------------------------------

async function renderSources() {
  const rows = (await api("/sources")).map(s => el("tr", {"data-source": s.name},
    el("td", {text: s.name}), el("td", {text: s.type}), el("td", {class: "num", text: s.weight}),
    el("td", {}, stateBadge(s.state)),
    el("td", {title: Object.entries(s.health_domain.services).map(([k, v]) => `${k}: ${v}`).join("\n")},
       domainBadge(s.health_domain.state)),
    el("td", {}, drainControl(s)), el("td", {class: "num", text: s.services}),
    el("td", {class: "num", text: s.endpoints}), el("td", {text: age(s.last_event_age_s)}),
    el("td", {text: s.kubeconfig ? s.kubeconfig + (s.context ? ` (${s.context})` : "") : s.in_cluster ? "in-cluster" : "-"}),
    el("td", {class: "reason", text: s.error || ""})));
  const typing = document.activeElement && document.activeElement.dataset.drainOver;
  if (!typing) document.querySelector("#sources-table tbody").replaceChildren(...rows);  // keep the caret
}

// Operator drain: new requests move away from the source over the time given (in-flight ones
// finish); undrain ramps it back.  POST /sources/{name}/drain|undrain {"over": "30s"}.
function drainControl(s) {
  return el("span", {class: "drain"},
    el("input", {"data-drain-over": s.name, value: drainOver[s.name] || "30s", size: 4,
                 "aria-label": `over how long to ${s.drained ? "undrain" : "drain"} ${s.name}`}),
    el("button", {type: "button", "data-drain": s.name, "data-action": s.drained ? "undrain" : "drain",
                  text: s.drained ? "undrain" : "drain"}));
}
const drainOver = {};     // what the operator typed, kept across the view's redraws

function endpointRow(e) {
  const health = e.healthy ? badge("healthy", "ok") : e.causes.map(c => badge(c.replaceAll("_", " "), "bad"));
  return el("tr", {class: "endpoint", "data-cluster": e.cluster, "data-address": e.address,
                   "data-serving": e.serving ? "yes" : "no"},
    el("td", {text: e.address}), el("td", {class: "num", text: e.weight}), el("td", {}, health),
    el("td", {}, e.serving ? badge("serving", "ok") : badge("not serving", "bad")),
    el("td", {}, shareBar(e.share)), el("td", {class: "num", text: e.requests}),
    el("td", {class: "num", text: e.errors}), el("td", {class: "num", text: e.in_flight}),
    el("td", {class: "num", text: e.idle_connections}), el("td", {class: "reason", text: e.reason || ""}));
}

async function renderServices() {
  const services = await api("/services");
  const cards = services.map(svc => {
    const clusters = svc.clusters.map(c => {
      const eps = svc.endpoints.filter(e => e.cluster === c.cluster);
      const body = eps.length
        ? el("table", {class: "grid"},
            el("thead", {}, el("tr", {}, ["Address", "Weight", "Health", "Serving", "Share", "Requests",
                                          "Errors", "In flight", "Idle conns", "Why"].map(h => el("th", {text: h})))),
            el("tbody", {}, eps.map(endpointRow)))
        : el("div", {class: "muted", text: c.reason || "no endpoints"});
      const domain = (svc.cluster_states || {})[c.cluster];
      return el("div", {class: "cluster", "data-cluster": c.cluster},
        el("h3", {}, c.cluster, stateBadge(c.source_state || "unknown"), domainBadge(domain && domain.state),
           el("span", {class: "muted", text: `${c.serving}/${c.endpoints} serving · share ${pct(c.share)}`})),
        body);
    });
    return el("div", {class: "card service", "data-service": svc.key},
      el("div", {class: "title"}, el("span", {class: "name", text: svc.key}),
         el("span", {class: "muted", text: `port ${svc.port} · ${svc.serving}/${svc.endpoints.length} endpoints serving`}),
         svc.panic ? badge("panic routing", "warn") : null, capacityText(svc.capacity)),
      levelList(svc.levels),
      clusters);
  });
  document.getElementById("services-list").replaceChildren(...cards);
}

// Capacity spill-over limits (services[].capacity), when set: beyond them, the next level.
function capacityText(cap) {
  if (!cap) return null;
  const parts = [];
  if (cap.max_in_flight_per_endpoint) parts.push(`${cap.max_in_flight_per_endpoint} in flight`);
  if (cap.max_rate_per_endpoint) parts.push(`${cap.max_rate_per_endpoint}/s`);
  return parts.length ? el("span", {class: "muted capacity", text: `spill over ${parts.join(", ")} per endpoint per worker`}) : null;
}

// Priority levels (only when a service has more than one): share of requests and why.
function levelList(levels) {
  if (!levels || levels.length < 2) return null;
  return el("ul", {class: "levels"}, levels.map(lv => el("li", {"data-priority": lv.priority,
    text: `priority ${lv.priority} (${lv.clusters.join(", ")}): ${lv.healthy}/${lv.endpoints} healthy, ` +
          `load ${lv.load_pct}%${lv.panic ? " PANIC" : ""} -- ${lv.why}`})));
}

// A route's edge policy in a few words, and the Kubernetes policies it comes from.
function policyText(p) {
  if (!p) return "";
  const parts = [];
  if (p.auth) parts.push(p.auth.method.replace("_", " ") + (p.auth.required ? "" : " (optional)"));
  if (p.rate_limit) parts.push(`${p.rate_limit.requests} per ${p.rate_limit.per_s}s by ${p.rate_limit.key}`);
  if (p.ip_filter) parts.push("ip filter");
  return parts.join(", ") + (p.from ? ` from ${p.from.join(", ")}` : "");
}

async function renderRoutes() {
  const rows = (await api("/routes")).map(r => el("tr", {"data-route": r.name},
    el("td", {class: "num", text: r.index}), el("td", {text: r.name}), el("td", {text: matchText(r.match)}),
    el("td", {text: r.backends.map(b => b.service + (r.backends.length > 1 ? ` (${b.weight})` : "")).join(", ")}),
    el("td", {class: "policy", text: policyText(r.policy)}),
    el("td", {class: "num", text: r.requests}), el("td", {class: "num", text: r.responses["2xx"] || 0}),
    el("td", {class: "num", text: r.responses["4xx"] || 0}), el("td", {class: "num", text: r.responses["5xx"] || 0}),
    el("td", {}, el("button", {type: "button", class: "remove", "data-remove-route": r.name, text: "remove"}))));
  document.querySelector("#routes-table tbody").replaceChildren(...rows);
}

async function explain(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const q = new URLSearchParams({path: form.get("path"), method: form.get("method") || "GET"});
  if (form.get("host")) q.set("host", form.get("host"));
  const out = document.getElementById("explain-out");
  const resp = await fetch("/debug/route?" + q);
  const x = await resp.json();
  if (!resp.ok) { out.textContent = x.error; return; }
  const lines = [];
  if (!x.route) lines.push(`no route: ${x.reason}`);
  else {
    lines.push(`route ${x.route.name} (#${x.route.index}: ${matchText(x.route.match)}) -> upstream path ${x.upstream_path}`);
    for (const b of x.backends) {
      lines.push(`  service ${b.service} share ${pct(b.share)}${b.panic ? " PANIC" : ""}${b.reason ? " -- " + b.reason : ""}`);
      if (b.levels && b.levels.length > 1)
        for (const lv of b.levels) lines.push(`    priority ${lv.priority} (${lv.clusters.join(", ")}) load ${lv.load_pct}% -- ${lv.why}`);
      for (const c of b.clusters) {
        lines.push(`    cluster ${c.cluster} (${c.source_state}) share ${pct(c.share)}${c.reason ? " -- " + c.reason : ""}`);
        for (const e of c.endpoints) lines.push(`      ${e.address.padEnd(22)} share ${pct(e.share).padStart(6)}${e.reason ? "  -- " + e.reason : ""}`);
      }
    }
  }
  out.textContent = lines.join("\n");
}

// -- traffic chart ---------------------------------------------------------------------------

function drawChart(container, times, series) {
  const W = 900, H = 240, L = 48, R = 12, T = 10, B = 26;
  const chart = svg("svg", {viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img"});
  const names = Object.keys(series).sort();
  let max = 1;
  for (const n of names) for (const v of series[n].rates) max = Math.max(max, v);
  max = niceMax(max);
  const t0 = times.length ? times[0] : 0, t1 = times.length ? times[times.length - 1] : 1;
  const x = t => L + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (W - L - R);
  const y = v => T + (1 - v / max) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4;
    chart.append(svg("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e6ea"}));
    const label = svg("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#6a7380"});
    label.textContent = v % 1 ? v.toFixed(1) : String(v);
    chart.append(label);
  }
  for (const [frac, anchor] of [[0, "start"], [0.5, "middle"], [1, "end"]]) {
    if (!times.length) break;
    const t = t0 + frac * (t1 - t0);
    const label = svg("text", {x: x(t), y: H - 8, "text-anchor": anchor, "font-size": 11, fill: "#6a7380"});
    label.textContent = `-${Math.round(t1 - t)}s`;
    chart.append(label);
  }
  const legend = el("div", {class: "legend"});
  names.forEach((name, i) => {
    const color = COLORS[i % COLORS.length];
    const rates = series[name].rates;
    if (rates.length) {
      const points = rates.map((v, j) => `${x(times[j]).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      chart.append(svg("polyline", {points, fill: "none", stroke: color, "stroke-width": 2,
                                    "stroke-linejoin": "round", "data-series": name}));
    }
    const last = rates.length ? rates[rates.length - 1] : 0;
    const item = el("span", {"data-series": name}, el("i"), `${name}${series[name].cluster ? " (" + series[name].cluster + ")" : ""}: ${last.toFixed(1)}/s`);
    item.firstChild.style.background = color;
    legend.append(item);
  });
  container.replaceChildren(chart, legend);
}

function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

async function renderTraffic() {
  const seconds = document.getElementById("window").value;
  const t = await api(`/traffic?seconds=${seconds}`);
  const clusters = {};
  for (const [name, rates] of Object.entries(t.clusters)) clusters[name] = {rates};
  drawChart(document.getElementById("chart-hosts"), t.times, t.hosts);
  drawChart(document.getElementById("chart-clusters"), t.times, clusters);
}

// -- refresh loop ----------------------------------------------------------------------------

const RENDER = {sources: renderSources, services: renderServices, routes: renderRoutes, traffic: renderTraffic};

async function refresh() {
  clearTimeout(timer);
  try {
    await Promise.all([refreshStatus(), RENDER[activeTab]()]);
  } catch (e) {
    console.warn(e);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function show(tab) {
  activeTab = tab;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== tab;
  history.replaceState(null, "", "#" + tab);
  refresh();
}

document.getElementById("tabs").addEventListener("click", e => {
  if (e.target.dataset.tab) show(e.target.dataset.tab);
});
document.getElementById("explain-form").addEventListener("submit", explain);
document.getElementById("window").addEventListener("change", refresh);
document.querySelector("#routes-table tbody").addEventListener("click", async e => {
  const name = e.target.dataset.removeRoute;
  if (name && confirm(`Remove route ${name}? (the config file is rewritten)`)) {
    await change("DELETE", `/routes/${encodeURIComponent(name)}`);
    refresh();
  }
});
const sourcesBody = document.querySelector("#sources-table tbody");
sourcesBody.addEventListener("input", e => {
  if (e.target.dataset.drainOver) drainOver[e.target.dataset.drainOver] = e.target.value;
});
sourcesBody.addEventListener("click", async e => {
  const name = e.target.dataset.drain, action = e.target.dataset.action;
  if (!name) return;
  const over = drainOver[name] || "30s";
  if (confirm(`${action} source ${name} over ${over}? (the config file is rewritten)`)) {
    await change("POST", `/sources/${encodeURIComponent(name)}/${action}`, {over});
    refresh();
  }
});
document.getElementById("reload-config").addEventListener("click", () => change("POST", "/reload"));
document.getElementById("logout").addEventListener("click", async () => {
  await change("POST", "/logout");
  signIn();
});
loadSession().then(ok => {
  if (ok) show(RENDER[location.hash.slice(1)] ? location.hash.slice(1) : "services");
});
