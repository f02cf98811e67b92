"""The web dashboard in a real headless Chromium, over a gateway fed by two local Kubernetes
clusters: the Services view shows both clusters' endpoints, then one once httpbin is removed
from cluster A; the Traffic view's per-cluster lines follow.  Screenshots go to artifacts/.

Needs Debian's ``chromium`` and ``chromium-driver`` (scripts/test.sh installs them).
"""
from __future__ import annotations

import collections
import http.client
import shutil
import threading
import time

import orjson
import pytest

from support import REPO, GatewayProcess, free_port, wait_until

pytestmark = pytest.mark.timeout(120)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = REPO / "artifacts"


def admin_get(port: int, path: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return orjson.loads(resp.read())
    finally:
        conn.close()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """``predicate()``'s first truthy value; a page that redrew its rows between find and read
    means "look again"."""
    from selenium.common.exceptions import StaleElementReferenceException
    return wait_until(predicate, timeout, what, interval, ignore=(StaleElementReferenceException,))


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    from gateway.devcluster.cluster import LocalCluster
    state = tmp_path_factory.mktemp("clusters")
    a = LocalCluster("a", state / "a", ["127.0.0.22"], port=0)
    b = LocalCluster("b", state / "b", ["127.0.0.23"], port=0)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture(scope="module")
def gw(clusters, tmp_path_factory):
    a, b = clusters
    admin = free_port()
    config = {
        "admin": f"127.0.0.1:{admin}",
        "sources": [
            {"name": "cluster-a", "type": "kubernetes", "kubeconfig": str(a.kubeconfig), "namespaces": ["default"]},
            {"name": "cluster-b", "type": "kubernetes", "kubeconfig": str(b.kubeconfig), "namespaces": ["default"]},
        ],
        "services": [{"name": "httpbin", "port": "http",
                      "health_check": {"path": "/healthz", "interval": "300ms", "timeout": "200ms"}}],
        "routes": [{"name": "test", "match": {"path": {"prefix": "/test"}}, "service": "httpbin",
                    "retries": {"attempts": 3}}],
    }
    g = GatewayProcess(config, tmp_path_factory.mktemp("dashboard"), "dashboard").start()
    g.admin_port = admin
    try:
        wait_for(lambda: _ready(admin), 15, "the admin API to say ready")
        yield g
    finally:
        g.stop()


def _ready(port: int) -> bool:
    try:
        return admin_get(port, "/ready")["ready"]
    except OSError:
        return False


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} missing: install Debian's chromium and chromium-driver "
                    "(scripts/test.sh does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1300,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


class Load:
    """A bounded request loop through the gateway (so the Traffic chart has lines)."""

    def __init__(self, g: GatewayProcess, limit_s: float = 60.0) -> None:
        self.g, self.limit_s = g, limit_s
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        with self.g.client() as c:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self.statuses.append(c.request("GET", "/test").status)
                time.sleep(0.01)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def endpoint_rows(driver) -> list[tuple[str, str]]:
    from selenium.webdriver.common.by import By
    return sorted((row.get_attribute("data-cluster"), row.get_attribute("data-address"))
                  for row in driver.find_elements(By.CSS_SELECTOR, "#services tr.endpoint"))


def test_sources_api_shows_kubernetes_state(gw, clusters):
    a, _ = clusters
    sources = {s["name"]: s for s in admin_get(gw.admin_port, "/sources")}
    s = sources["cluster-a"]
    assert (s["type"], s["state"], s["kubeconfig"], s["services"], s["endpoints"]) == \
        ("kubernetes", "synced", str(a.kubeconfig), 1, 1)
    assert s["api"] == "discovery.k8s.io/v1" and s["last_event_age_s"] is not None
    text = orjson.dumps(admin_get(gw.admin_port, "/config")).decode()
    assert "client-key" not in text and "token" not in text       # paths only, never credentials


def test_services_view_follows_cluster_a_removal(gw, clusters, browser):
    from selenium.webdriver.common.by import By
    a, b = clusters
    a_ep, b_ep = f"{a.pod_ips[0]}:{a.port}", f"{b.pod_ips[0]}:{b.port}"
    ARTIFACTS.mkdir(exist_ok=True)
    with Load(gw) as load:
        browser.get(f"http://127.0.0.1:{gw.admin_port}/#services")
        assert browser.title == "gateway console"
        wait_for(lambda: endpoint_rows(browser) == [("cluster-a", a_ep), ("cluster-b", b_ep)], 15,
                 "both clusters' endpoints in the Services view")
        serving = {r.get_attribute("data-address"): r.get_attribute("data-serving")
                   for r in browser.find_elements(By.CSS_SELECTOR, "#services tr.endpoint")}
        assert serving == {a_ep: "yes", b_ep: "yes"}
        browser.save_screenshot(str(ARTIFACTS / "dashboard-before.png"))
        time.sleep(3)                       # a few seconds of traffic on both clusters

        a.remove_service()
        wait_for(lambda: endpoint_rows(browser) == [("cluster-b", b_ep)], 15,
                 "only cluster B's endpoint after removing httpbin from cluster A")
        reason = wait_for(lambda: browser.find_element(
            By.CSS_SELECTOR, '#services .cluster[data-cluster="cluster-a"]').text, 5, "cluster A's row")
        assert "not found in this source" in reason
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

        # Traffic: cluster A's line drops to zero while cluster B's carries everything.
        def a_stopped():
            t = admin_get(gw.admin_port, "/traffic?seconds=60")
            return t["clusters"]["cluster-a"][-2:] == [0.0, 0.0] and t["clusters"]["cluster-b"][-1] > 0 and t
        t = wait_for(a_stopped, 10, "cluster A's request rate to fall to 0", interval=0.5)
        assert max(t["clusters"]["cluster-a"]) > 0      # it was serving before
        browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="traffic"]').click()
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#chart-clusters polyline")) == 2, 10,
                 "two lines in the per-cluster chart")
        legend = browser.find_element(By.CSS_SELECTOR, "#chart-hosts .legend").text
        assert a_ep in legend or "cluster-a" in legend
        assert b_ep in legend
        browser.save_screenshot(str(ARTIFACTS / "dashboard-traffic.png"))
    assert load.statuses and set(load.statuses) == {200}, collections.Counter(load.statuses)


# -- the console behind its tokens -------------------------------------------------------------

WRITE_TOKEN = "dashboard-write-token-0123456789"
READ_TOKEN = "dashboard-read-token-0123456789"


@pytest.fixture(scope="module")
def secured_gw(backend_a, tmp_path_factory):
    from support import static_source
    work = tmp_path_factory.mktemp("dashboard-secured")
    (work / "write-token").write_text(WRITE_TOKEN + "\n")
    (work / "read-token").write_text(READ_TOKEN + "\n")
    admin = free_port()
    config = {
        "admin": {"listen": f"127.0.0.1:{admin}", "token_file": str(work / "write-token"),
                  "read_token_file": str(work / "read-token")},
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]})],
        "services": [{"name": "httpbin", "port": 80}],
        "routes": [{"name": "extra", "match": {"path": {"prefix": "/extra"}}, "service": "httpbin"},
                   {"name": "all", "match": {"path": {"prefix": "/"}}, "service": "httpbin",
                    "rate_limit": {"requests": 1000, "per": "1s", "key": "client"}}],
    }
    g = GatewayProcess(config, work, "secured").start()
    g.admin_port = admin
    try:
        wait_for(lambda: _ready(admin), 15, "the admin API to say ready")
        yield g
    finally:
        g.stop()


def on_login_page(browser) -> bool:
    from urllib.parse import urlsplit
    return urlsplit(browser.current_url).path == "/login"     # a redirect keeps the #fragment


def sign_in(browser, port: int, token: str) -> None:
    from selenium.webdriver.common.by import By
    browser.get(f"http://127.0.0.1:{port}/#services")
    wait_for(lambda: on_login_page(browser), 10, "the redirect to the login page")
    field = browser.find_element(By.ID, "token")
    field.send_keys(token)
    browser.find_element(By.ID, "login-submit").click()
    wait_for(lambda: not on_login_page(browser), 10, "the dashboard after signing in")
    assert browser.current_url.endswith("/#services")        # back where it was sent from


def remove_route(browser, name: str) -> str:
    """Click the route's remove button, confirm, and return what the console says."""
    from selenium.webdriver.common.by import By
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="routes"]').click()
    wait_for(lambda: _click(browser, f'button[data-remove-route="{name}"]'), 10, f"route {name}'s remove button")
    wait_for(lambda: _alert(browser), 5, "the confirmation").accept()
    return wait_for(lambda: browser.find_element(By.ID, "action-result").text, 10, "the console's answer")


def _click(browser, selector: str) -> bool:
    """Click the element if it is there; False (look again) when it is not, or when the view
    was redrawn between finding and clicking it (the dashboard refreshes on its own)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    found = browser.find_elements(By.CSS_SELECTOR, selector)
    if not found:
        return False
    try:
        found[0].click()
    except StaleElementReferenceException:
        return False
    return True


def _alert(browser):
    from selenium.common.exceptions import NoAlertPresentException
    try:
        return browser.switch_to.alert
    except NoAlertPresentException:
        return None


def test_console_behind_tokens_login_write_and_read_scopes(secured_gw, browser):
    from selenium.webdriver.common.by import By
    port = secured_gw.admin_port
    browser.delete_all_cookies()
    # Without a session the browser gets the login page, not the dashboard (nor a bare 401).
    browser.get(f"http://127.0.0.1:{port}/")
    wait_for(lambda: on_login_page(browser), 10, "the login page")
    assert "Sign in" in browser.find_element(By.ID, "login-form").text
    # A wrong token is refused on the page.
    browser.find_element(By.ID, "token").send_keys("not-the-token-at-all")
    browser.find_element(By.ID, "login-submit").click()
    assert wait_for(lambda: browser.find_element(By.ID, "login-error").text, 10, "the error") == "wrong token"

    # The write token: the dashboard shows the services, and a change from it goes through.
    sign_in(browser, port, WRITE_TOKEN)
    wait_for(lambda: endpoint_rows(browser) == [("zone-a", secured_gw.config["sources"][0]["services"][0]["endpoints"][0])],
             15, "the service's endpoint in the Services view")
    assert browser.find_element(By.ID, "scope").text == "write access"
    cookie = browser.get_cookie("gateway_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == ""      # no script can read it
    # The routes view says which edge policy applies to a route.
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="routes"]').click()
    policy = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-route="all"] td.policy'), 10,
                      "the routes view")[0]
    assert policy.text == "1000 per 1s by client"
    answer = remove_route(browser, "extra")
    assert answer.startswith("DELETE /routes/extra: done"), answer
    assert "name: extra" not in secured_gw.config_path.read_text()
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, 'tr[data-route="extra"]'), 10, "the route gone")
    browser.save_screenshot(str(ARTIFACTS / "dashboard-write.png"))

    # Signing out ends the session: the dashboard sends the browser back to the login page.
    browser.find_element(By.ID, "logout").click()
    wait_for(lambda: on_login_page(browser), 10, "the login page after signing out")
    browser.get(f"http://127.0.0.1:{port}/")
    wait_for(lambda: on_login_page(browser), 10, "the login page again")

    # The read token: the dashboard reads, and the same kind of change is refused with 403.
    sign_in(browser, port, READ_TOKEN)
    wait_for(lambda: endpoint_rows(browser), 15, "the Services view with the read token")
    assert browser.find_element(By.ID, "scope").text == "read access"
    answer = remove_route(browser, "all")
    assert answer == ("DELETE /routes/all refused (403): read-only access (signed in with the read token): "
                      "DELETE /routes/all needs the write token"), answer
    assert "name: all" in secured_gw.config_path.read_text()
    browser.find_element(By.ID, "reload-config").click()
    wait_for(lambda: "POST /reload refused (403)" in browser.find_element(By.ID, "action-result").text, 10,
             "the refused reload")
    browser.save_screenshot(str(ARTIFACTS / "dashboard-read.png"))


# -- the cluster as a health domain, and operator drain, from the dashboard ---------------------

@pytest.fixture(scope="module")
def zones_gw(backend_a, backend_b, tmp_path_factory):
    from support import static_source
    admin = free_port()
    config = {
        "admin": f"127.0.0.1:{admin}",
        "sources": [static_source("zone-a", {"httpbin": [backend_a.address]}),
                    static_source("zone-b", {"httpbin": [backend_b.address]})],
        "services": [{"name": "httpbin", "port": 80, "failover": ["zone-b"],
                      "capacity": {"max_in_flight_per_endpoint": 50}}],
        "routes": [{"name": "test", "match": {"path": {"prefix": "/"}}, "service": "httpbin"}],
    }
    g = GatewayProcess(config, tmp_path_factory.mktemp("dashboard-zones"), "zones").start()
    g.admin_port = admin
    try:
        wait_for(lambda: _ready(admin), 15, "the admin API to say ready")
        yield g
    finally:
        g.stop()


def _domain_states(browser, scope: str) -> dict[str, str]:
    """{cluster or source: health-domain state} as the dashboard shows it."""
    from selenium.webdriver.common.by import By
    if scope == "sources":
        rows = browser.find_elements(By.CSS_SELECTOR, "#sources-table tr[data-source]")
        return {r.get_attribute("data-source"): r.find_element(By.CSS_SELECTOR, ".badge.domain").text
                for r in rows if r.find_elements(By.CSS_SELECTOR, ".badge.domain")}
    cards = browser.find_elements(By.CSS_SELECTOR, '#services .cluster[data-cluster]')
    return {c.get_attribute("data-cluster"): c.find_element(By.CSS_SELECTOR, "h3 .badge.domain").text
            for c in cards if c.find_elements(By.CSS_SELECTOR, "h3 .badge.domain")}


def _drain_click(browser, source: str, action: str, over: str) -> str:
    """Type ``over``, click the source's drain/undrain button, confirm; the console's answer."""
    from selenium.webdriver.common.by import By
    button = wait_for(lambda: [b for b in browser.find_elements(By.CSS_SELECTOR, f'button[data-drain="{source}"]')
                               if b.get_attribute("data-action") == action], 10, f"the {action} button of {source}")[0]
    field = browser.find_element(By.CSS_SELECTOR, f'input[data-drain-over="{source}"]')
    field.clear()
    field.send_keys(over)
    button = browser.find_element(By.CSS_SELECTOR, f'button[data-drain="{source}"]')   # not redrawn while typing
    assert button.get_attribute("data-action") == action
    browser.execute_script("document.getElementById('action-result').textContent = ''")
    button.click()
    alert = wait_for(lambda: _alert(browser), 5, "the confirmation")
    assert alert.text == f"{action} source {source} over {over}? (the config file is rewritten)"
    alert.accept()
    return wait_for(lambda: browser.find_element(By.ID, "action-result").text, 10, "the console's answer")


def test_dashboard_shows_health_domains_and_drains_a_source(zones_gw, browser):
    from selenium.webdriver.common.by import By
    port = zones_gw.admin_port
    browser.delete_all_cookies()
    ARTIFACTS.mkdir(exist_ok=True)
    # The event first (the gateway says both healthy: on a busy machine its first checks take
    # longer), then what the page shows of it.
    wait_for(lambda: {k: v["state"] for k, v in admin_get(port, "/services/default/httpbin")["cluster_states"].items()}
             == {"zone-a": "healthy", "zone-b": "healthy"}, 60, "both clusters healthy in /services")
    with Load(zones_gw) as load:
        browser.get(f"http://127.0.0.1:{port}/#services")
        wait_for(lambda: _domain_states(browser, "services") == {"zone-a": "healthy", "zone-b": "healthy"}, 30,
                 "both clusters healthy in the Services view")
        assert browser.find_element(By.CSS_SELECTOR, '#services .service[data-service="default/httpbin"] .capacity'
                                    ).text == "spill over 50 in flight per endpoint per worker"
        browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="sources"]').click()
        wait_for(lambda: _domain_states(browser, "sources") == {"zone-a": "healthy", "zone-b": "healthy"}, 15,
                 "both sources healthy in the Sources view")

        answer = _drain_click(browser, "zone-a", "drain", "1s")
        assert answer.startswith("POST /sources/zone-a/drain: done"), answer
        wait_for(lambda: _domain_states(browser, "sources").get("zone-a") == "drained", 15,
                 "zone-a drained in the Sources view")
        wait_for(lambda: browser.find_element(By.CSS_SELECTOR, 'button[data-drain="zone-a"]')
                 .get_attribute("data-action") == "undrain", 10, "zone-a's button to offer undrain")
        assert "drained: true" in zones_gw.config_path.read_text()
        assert admin_get(port, "/services/default/httpbin")["cluster_states"]["zone-a"]["state"] == "drained"
        browser.save_screenshot(str(ARTIFACTS / "dashboard-drained.png"))
        browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="services"]').click()
        wait_for(lambda: _domain_states(browser, "services") == {"zone-a": "drained", "zone-b": "healthy"}, 15,
                 "zone-a drained in the Services view")

        browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="sources"]').click()
        answer = _drain_click(browser, "zone-a", "undrain", "1s")
        assert answer.startswith("POST /sources/zone-a/undrain: done"), answer
        wait_for(lambda: _domain_states(browser, "sources").get("zone-a") == "healthy", 15,
                 "zone-a healthy again in the Sources view")
        assert "drained" not in zones_gw.config_path.read_text()
    assert load.statuses and set(load.statuses) == {200}, collections.Counter(load.statuses)
