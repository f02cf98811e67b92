"""WebSocket messages side by side: over HTTP/2 (RFC 8441) and over HTTP/1.1 through the gateway,
over HTTP/1.1 through nginx (which has no RFC 8441), to the same echo upstream.

    python bench/websocket.py                    # 5 s per case, 3 repetitions (quiet machine only)
    python bench/websocket.py --duration 1 --repeat 1     # a quick check that it runs
    python bench/websocket.py --ref 4e1f2a0      # also that commit's gateway, in the same runs

Layout as bench/run.py: the proxy on CPU 0, the clients and the upstream on CPU 1.  The upstream
is echo-basic's ``/ws`` (gateway.devcluster.echo_basic: an HTTP/1.1 Upgrade, every frame sent
back).  Each case opens ``--sockets`` WebSockets, each on its own connection, and keeps
``--window`` binary messages of 64 bytes in flight on each (a new one sent for each echo read).
Cases: ``ws-h2``, an extended CONNECT over h2c with prior knowledge (the ``h2`` library; nginx
is not asked); ``ws-h1``, an HTTP/1.1 Upgrade.  Messages are framed by ``wsproto``.  A line's
CPU us is the proxy's utime+stime per message echoed (relayed both ways).
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (NGINX_COMMON, NGINX_HTTP_COMMON, PYTHON, BenchError, Proc,  # noqa: E402
                       build_extensions, export_ref, free_port, measure)

PAYLOAD = bytes(range(64))
CASES = ("ws-h2", "ws-h1")


def nginx_conf(tmp: Path, port: int, upstream: str) -> str:
    return (f"daemon off;\nmaster_process on;\nuser root;\nworker_processes 1;\npid {tmp}/ws.pid;\n"
            + NGINX_COMMON.format() + "http {\n" + NGINX_HTTP_COMMON.format(tmp=tmp) + f"""    access_log off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 120s;
        }}
    }}
}}
""")


def gateway_conf(tmp: Path, port: int, upstream: str, name: str) -> str:
    """The gateway as nginx above; its JSON access log to a file (one line per WebSocket)."""
    return yaml.safe_dump({
        "listen": f"127.0.0.1:{port}", "admin": "off", "timeouts": {"drain": "2s"},
        "access_log": {"path": f"{tmp}/{name}-access.log", "buffer": "64KiB", "flush_interval": "1s"},
        "sources": [{"name": "bench", "type": "static", "services": [
            {"name": "echo", "namespace": "default", "endpoints": [upstream]}]}],
        "services": [{"name": "echo", "namespace": "default", "port": int(upstream.rsplit(":", 1)[1])}],
        "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "service": "default/echo"}],
    }, sort_keys=False)


class Echoes:
    """Counts echoes on one WebSocket and keeps ``window`` messages in flight."""

    def __init__(self, window: int) -> None:
        from wsproto.connection import Connection, ConnectionType

        self.ws = Connection(ConnectionType.CLIENT)
        self.window = window
        self.count = 0

    def first_messages(self) -> bytes:
        from wsproto.events import BytesMessage

        return b"".join(self.ws.send(BytesMessage(PAYLOAD)) for _ in range(self.window))

    def feed(self, data: bytes) -> bytes:
        """The bytes read; what to send back (a message per echo)."""
        from wsproto.events import BytesMessage

        self.ws.receive_data(data)
        out = []
        for event in self.ws.events():
            if isinstance(event, BytesMessage) and event.message_finished:
                self.count += 1
                out.append(self.ws.send(BytesMessage(PAYLOAD)))
        return b"".join(out)


def ws_h1(port: int, stop: float, window: int) -> int:
    from wsproto import WSConnection
    from wsproto.connection import ConnectionType
    from wsproto.events import AcceptConnection, Request

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    handshake = WSConnection(ConnectionType.CLIENT)
    sock.sendall(handshake.send(Request(host=f"127.0.0.1:{port}", target="/ws")))
    while True:
        data = sock.recv(65536)
        if not data:
            raise BenchError("the proxy closed during the WebSocket handshake")
        handshake.receive_data(data)
        if any(isinstance(event, AcceptConnection) for event in handshake.events()):
            break
    echoes = Echoes(window)
    sock.sendall(echoes.first_messages())
    while time.monotonic() < stop:
        data = sock.recv(65536)
        if not data:
            raise BenchError("the proxy closed the WebSocket")
        if reply := echoes.feed(data):
            sock.sendall(reply)
    sock.close()
    return echoes.count


def ws_h2(port: int, stop: float, window: int) -> int:
    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False, validate_inbound_headers=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    stream_id = conn.get_next_available_stream_id()
    opened = False
    echoes = Echoes(window)
    while time.monotonic() < stop:
        data = sock.recv(65536)
        if not data:
            raise BenchError("the proxy closed the HTTP/2 connection")
        out = []
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged) and stream_id not in conn.streams:
                conn.send_headers(stream_id, [(b":method", b"CONNECT"), (b":protocol", b"websocket"),
                                              (b":scheme", b"http"), (b":authority", f"127.0.0.1:{port}".encode()),
                                              (b":path", b"/ws"), (b"sec-websocket-version", b"13")])
            elif isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(b":status")
                if status != b"200":
                    raise BenchError(f"extended CONNECT answered {status!r}")
                opened = True
                out.append(echoes.first_messages())
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                out.append(echoes.feed(event.data))
            elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                raise BenchError(f"the proxy ended the WebSocket: {event}")
        if opened and (reply := b"".join(out)):
            conn.send_data(stream_id, reply)
        if pending := conn.data_to_send():
            sock.sendall(pending)
    sock.close()
    return echoes.count


def run_case(case: str, port: int, duration: float, sockets: int, window: int) -> int:
    """Messages echoed on ``sockets`` WebSockets (a thread each) in ``duration`` seconds."""
    client = ws_h2 if case == "ws-h2" else ws_h1
    stop = time.monotonic() + duration
    counts: list[int] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            counts.append(client(port, stop, window))
        except BaseException as exc:    # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(sockets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"{case}: {errors[0]!r}")
    return sum(counts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sockets", type=int, default=4, help="WebSockets at once (a connection each)")
    parser.add_argument("--window", type=int, default=16, help="messages in flight on each")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--ref", help="also measure the gateway of these commits (comma-separated)")
    args = parser.parse_args(argv)
    for tool in ("nginx", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/websocket.py needs {tool} (apt install nginx-light util-linux)")
    from gateway.devcluster.echo_basic import EchoBasicProcess

    tmp = Path(tempfile.mkdtemp(prefix="bench-ws-"))
    upstream = EchoBasicProcess("127.0.0.2", free_port("127.0.0.2"), "bench", "echo-0").start()
    subprocess.run(["taskset", "-p", "-c", "1", str(upstream.pid)], check=True, capture_output=True)
    procs: list[Proc] = []
    try:
        targets: dict[str, tuple[Proc, int]] = {}
        port = free_port("127.0.0.1")
        (tmp / "nginx.conf").write_text(nginx_conf(tmp, port, upstream.address))
        targets["nginx"] = (Proc("nginx-ws", ["taskset", "-c", "0", "nginx", "-p", str(tmp), "-e", "stderr",
                                              "-c", str(tmp / "nginx.conf")], tmp), port)
        sources = {"gateway": Path(__file__).resolve().parent.parent}
        for i, ref in enumerate(filter(None, (args.ref or "").split(","))):
            src = export_ref(ref, tmp / f"ref-{i}")
            build_extensions(src)
            sources[f"gw@{ref[:7]}"] = src
        for name, src in sources.items():
            port = free_port("127.0.0.1")
            conf = tmp / f"{name.replace('@', '-')}.yaml"
            conf.write_text(gateway_conf(tmp, port, upstream.address, name.replace("@", "-")))
            targets[name] = (Proc(name.replace("@", "-"), ["taskset", "-c", "0", PYTHON, "-m", "gateway", "run",
                                                            "--config", str(conf), "--log-level", "warning"],
                                  tmp, cwd=src), port)
        procs += [proc for proc, _ in targets.values()]
        for name, (proc, port) in targets.items():
            deadline = time.monotonic() + 20
            while True:                         # answering a WebSocket: ready
                try:
                    run_case("ws-h1", port, 0.2, 1, 1)
                    break
                except (BenchError, OSError):
                    if time.monotonic() > deadline or not proc.alive():
                        raise BenchError(f"{name} does not answer:\n{proc.log_tail()}")
                    time.sleep(0.2)
        print(f"{'target':<10} {'case':<8} {'msg/s':>9} {'CPU us/msg':>11}")
        for case in filter(None, args.cases.split(",")):
            for _ in range(args.repeat):
                for name, (proc, port) in targets.items():      # side by side, alternating
                    if case == "ws-h2" and name == "nginx":
                        continue                # no RFC 8441 in nginx
                    n, cpu = measure(proc, lambda: run_case(case, port, args.duration, args.sockets, args.window))
                    print(f"{name:<10} {case:<8} {n / args.duration:>9.0f} {cpu / n * 1e6:>11.1f}")
    finally:
        for proc in reversed(procs):
            proc.stop()
        upstream.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
