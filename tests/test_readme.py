"""The README's commands and config, checked against the real CLI and config parser.

* Every key of the README's big YAML example is one the parser knows: validating it
  gives only "file not found" errors (its kubeconfigs and certificates are examples).
* "Running it yourself": `gateway validate --config examples/static.yaml`, the two
  backend commands, `gateway run` on that file and the curl line (ports moved to free ones).
* "Console": every `gateway ...` line of its command block runs with exit 0 against
  that running gateway (GATEWAY_ADMIN points the CLI at it, as the README says).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import urllib.request

import orjson
import pytest
import yaml

from support import PYTHON, REPO, free_port, stop_process, wait_listening

pytestmark = pytest.mark.timeout(90)

README = (REPO / "README.md").read_text()


def blocks(after_heading: str, lang: str = "") -> list[str]:
    """The fenced blocks of the section that starts with ``after_heading``."""
    section = README.split(after_heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def commands(block: str) -> list[str]:
    out = []
    for line in block.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line.startswith("gateway "):
            if " | " in line:                   # "gateway status | sources | ...": one each
                out += ["gateway " + part.strip() for part in line[len("gateway "):].split("|")]
            else:
                out.append(line)
    return out


def run_cli(line: str, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = shlex.split(line)
    assert argv[0] == "gateway"
    return subprocess.run([PYTHON, "-m", "gateway", *argv[1:]], cwd=str(REPO), capture_output=True,
                          text=True, timeout=30, env=env)


def test_every_key_of_the_config_example_exists():
    from gateway.config import ConfigError, parse_config
    (example,) = blocks("## Configuration", "yaml")
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_load(example))
    # A certificate whose files are missing is dropped, so "at least one" follows from those.
    others = [e for e in err.value.errors if "file not found" not in e
              and e != "tls.certificates: at least one certificate is needed"]
    assert not others, others


# Sections of the README's example whose values are the model's defaults, but the keys named
# (example values); the model declares each default once (gateway.config.model.setting).
DOCUMENTED_DEFAULTS = [
    (("timeouts",), "Timeouts", ()),
    (("limits",), "Limits", ()),
    (("http", "path"), "PathConfig", ()),
    (("access_log",), "AccessLogConfig", ()),
    (("tracing",), "TracingConfig", ("endpoint",)),
    (("services", 0, "health_check"), "HealthCheckConfig", ("path",)),
    (("services", 0, "outlier_detection"), "OutlierConfig", ("success_rate",)),
    (("services", 0, "outlier_detection", "success_rate"), "SuccessRate", ()),
    (("services", 0, "slow_start"), "SlowStart", ("window",)),
]


@pytest.mark.parametrize("where, name, examples", DOCUMENTED_DEFAULTS, ids=lambda v: str(v))
def test_the_config_example_shows_the_models_defaults(where, name, examples):
    import dataclasses
    from gateway.config import model
    from gateway.config.validate import section
    (example,) = blocks("## Configuration", "yaml")
    value = yaml.safe_load(example)
    for key in where:
        value = value[key]
    cls = getattr(model, name)
    errs: list[str] = []
    parsed = section(cls, value, ".".join(map(str, where)), errs)
    assert errs == [] and parsed is not None
    fields = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls)}
    shown = [key for key in value if key not in examples]
    assert shown, "the README shows none of this section's keys"
    for key in shown:
        assert getattr(parsed, fields[key].name) == fields[key].default, f"README {where} {key}"


def test_the_edge_policy_example_loads(tmp_path):
    """The README's edge-policy routes parse, once the credential files they name exist."""
    import base64
    import hashlib
    import bcrypt
    from gateway.config import parse_route
    from support import Pki
    example, global_example, _ = blocks("## Edge policy", "yaml")
    pki = Pki(tmp_path / "pki")
    files = {"htpasswd": "alice:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode() + "\n"
                         "bob:{SHA}" + base64.b64encode(hashlib.sha1(b"pw").digest()).decode() + "\n",
             "api-keys": "billing:0123456789abcdef0123\n", "idp-ca.pem": pki.ca.read_text()}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    routes = yaml.safe_load(example.replace("/etc/gateway/", f"{tmp_path}/"))["routes"]
    parsed = [parse_route(route) for route in routes]
    assert [r.auth.jwt.jwks_url for r in parsed if r.auth.jwt] == ["https://idp.example.com/.well-known/jwks.json"]
    assert parsed[0].rate_limit.key == "header:x-user" and parsed[0].ip_filter.deny == ("10.9.0.0/16",)
    assert parsed[1].auth.required is False and [u for u, _ in parsed[1].auth.basic.users] == ["alice", "bob"]
    assert parsed[3].auth.ext_authz.forward_headers == ("x-user", "x-tenant")
    from gateway.config import parse_config
    doc = yaml.safe_load(global_example)
    doc["services"] = [{"name": "search", "port": 80}]
    config = parse_config(doc)
    assert config.redis.address == ("127.0.0.1", 6379) and config.routes[0].rate_limit.scope == "global"


def test_the_kubernetes_policy_example_is_read_as_written():
    """The README's SecurityPolicy and RateLimitPolicy, read as the controller reads them, with
    the Secret they name present: accepted, and what they apply."""
    import bcrypt
    from gateway.gatewayapi.policies import read_policy
    *_, kube_example = blocks("## Edge policy", "yaml")
    security, limit = yaml.safe_load_all(kube_example)
    htpasswd = {".htpasswd": "alice:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()}
    read = read_policy("security_policies", ("shop", "orders-auth"), security,
                       {("shop", "orders-htpasswd"): htpasswd}, global_limits=False)
    assert read.problem is None and read.targets == (("HTTPRoute", "shop", "orders", None),)
    assert read.value["auth"].basic.forward_username == "x-user" and read.value["ip_filter"].allow == ("10.0.0.0/8",)
    read = read_policy("rate_limit_policies", ("shop", "orders-limit"), limit, {}, global_limits=False)
    assert read.problem is None and read.targets == (("Gateway", "shop", "edge", "https"),)
    assert (read.value["rate_limit"].bucket, read.value["rate_limit"].key) == (200, "client")


def test_running_it_yourself_and_the_console_commands(tmp_path):
    import os
    (block,) = blocks("## Running it yourself")
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    validate = next(line for line in lines if line.startswith("gateway validate"))
    result = run_cli(validate)
    assert result.returncode == 0, result.stderr

    # The example on free ports: its backends, then the gateway.
    config = yaml.safe_load((REPO / "examples/static.yaml").read_text())
    listen, admin = free_port(), free_port()
    config["listen"], config["admin"] = f"127.0.0.1:{listen}", f"127.0.0.1:{admin}"
    log_path = tmp_path / "access.log"
    config["access_log"] = {"path": str(log_path), "flush_interval": "100ms"}
    procs = []
    try:
        addresses = []
        for line in lines:
            if line.startswith("python -m gateway.devcluster.backend"):
                argv = shlex.split(line.rstrip("&").strip())
                port = free_port(argv[argv.index("--host") + 1])
                argv[argv.index("--port") + 1] = str(port)
                procs.append(subprocess.Popen([PYTHON, *argv[1:]], cwd=str(REPO)))
                host = argv[argv.index("--host") + 1]
                wait_listening(host, port, 20, procs[-1])
                addresses.append(f"{host}:{port}")
        assert len(addresses) == 2
        for source, address in zip(config["sources"], addresses):
            source["services"][0]["endpoints"] = [address]
        path = tmp_path / "static.yaml"
        path.write_text(yaml.safe_dump(config))
        run = next(line for line in lines if line.startswith("gateway run"))
        argv = shlex.split(run.replace("examples/static.yaml", str(path)))
        procs.append(subprocess.Popen([PYTHON, "-m", "gateway", *argv[1:]], cwd=str(REPO),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_listening("127.0.0.1", admin, 20, procs[-1])
        curl = next(line for line in lines if line.startswith("curl"))
        url = shlex.split(curl)[-1].replace(":8080", f":{listen}")
        pods = set()
        for _ in range(4):                      # "alternates between the two backends"
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.status == 200
                pods.add(orjson.loads(resp.read())["pod"])
        assert len(pods) == 2, pods

        env = {**os.environ, "GATEWAY_ADMIN": f"http://127.0.0.1:{admin}"}
        env.pop("GATEWAY_ADMIN_TOKEN", None)
        (console,) = blocks("## Console")[:1]
        lines = commands(console)
        assert any(line.startswith("gateway route add api ") for line in lines)
        for line in lines:
            result = run_cli(line.replace("access.log", str(log_path)), env)
            assert result.returncode == 0, (line, result.stdout, result.stderr)
        assert "name: api" in path.read_text()          # the route add was written back
    finally:
        for proc in reversed(procs):
            stop_process(proc)
