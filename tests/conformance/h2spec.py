"""Run h2spec (an RFC 7540/7541 conformance tester: 146 cases) against a gateway started here:
the plain port (h2c by prior knowledge) and the TLS port (ALPN h2), with ``workers`` and
``http.cleartext`` as given.  Not part of the test command: h2spec is a Go program that is
not packaged for Debian or PyPI.  Built from its source (github.com/summerwind/h2spec) with
Debian's Go packages, in GOPATH mode::

    apt-get install golang-go golang-golang-x-net-dev golang-github-spf13-cobra-dev \\
        golang-github-fatih-color-dev golang-github-mattn-go-colorable-dev \\
        golang-github-mattn-go-isatty-dev golang-github-spf13-pflag-dev golang-golang-x-sys-dev \\
        golang-github-inconshreveable-mousetrap-dev
    mkdir -p /tmp/h2spec/src/github.com/summerwind && git clone <h2spec> /tmp/h2spec/src/github.com/summerwind/h2spec
    cd /tmp/h2spec/src/github.com/summerwind/h2spec
    GOPATH=/tmp/h2spec:/usr/share/gocode GO111MODULE=off go build -o /tmp/h2spec/h2spec ./cmd/h2spec

    python tests/conformance/h2spec.py --h2spec /tmp/h2spec/h2spec --cleartext h2c --workers 2
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from support import GatewayProcess, Pki, free_port, static_source, two_cluster_pods  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--h2spec", required=True, help="the h2spec binary")
    ap.add_argument("--cleartext", default="auto", choices=("auto", "h2c"))
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    failed = 0
    for pods in two_cluster_pods(1):
        a, b = pods
        tmp = Path(tempfile.mkdtemp(prefix="h2spec-"))
        leaf = Pki(tmp / "pki").leaf("gw.test")
        tls_port = free_port()
        gw = GatewayProcess({
            "workers": args.workers, "http": {"cleartext": args.cleartext},
            "sources": [static_source("a", {"demo/test": [a.address]}),
                        static_source("b", {"demo/test": [b.address]})],
            "services": [{"namespace": "demo", "name": "test", "port": 80}],
            "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "demo/test"}],
            "tls": {"listen": f"127.0.0.1:{tls_port}",
                    "certificates": [{"cert": str(leaf.cert), "key": str(leaf.key)}]},
        }, tmp, "h2spec").start()
        try:
            for name, port_args in (("h2c", ["-p", str(gw.port)]), ("h2 (TLS)", ["-p", str(tls_port), "-t", "-k"])):
                run = subprocess.run([args.h2spec, "-h", "127.0.0.1", *port_args, "-o", "5"],
                                     capture_output=True, text=True, timeout=600)
                summary = [line for line in run.stdout.splitlines() if " tests, " in line]
                print(f"{name}: {summary[-1] if summary else run.stdout[-2000:]}")
                if run.returncode != 0:
                    failed += 1
                    print(run.stdout.split("Failures:", 1)[-1])
        finally:
            gw.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
