// The console's sign-in: the token is posted once (same origin) and exchanged for an
// HttpOnly session cookie; this script never stores it.
"use strict";

document.getElementById("login-form").addEventListener("submit", async event => {
  event.preventDefault();
  const input = document.getElementById("token");
  const error = document.getElementById("login-error");
  error.textContent = "";
  try {
    const resp = await fetch("/login", {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify({token: input.value.trim()}),
                                         cache: "no-store"});
    const answer = await resp.json();
    if (!resp.ok) { error.textContent = answer.error || `HTTP ${resp.status}`; return; }
    input.value = "";
    location.replace("/" + location.hash);     // the tab it was sent here from
  } catch (e) {
    error.textContent = `admin API unreachable (${e.message})`;
  }
});
