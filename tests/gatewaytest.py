"""Shared helpers for the end-to-end proxy tests: real processes, real sockets, no mocks.

* ``free_port(host)``: a port nothing listens on (bound to port 0, then closed).
* ``start_backend(host, cluster, pod)``: an httpbin-like backend process
  (``gateway.devcluster.backend``) on a loopback address, stopped by pid with ``.stop()``.
* ``GatewayProcess``: ``python -m gateway run --config FILE`` with a config written from a
  dict; ``.log`` reads its access log (a file, flushed every 100 ms).
* ``Client``: a small blocking HTTP/1.1 client over a raw socket (keep-alive, pipelining,
  Content-Length / chunked / until-close bodies, 1xx, raw bytes for malformed requests).
* ``TinyServer``: a one-purpose TCP upstream in a thread (e.g. "accept then close", a 101
  upgrade that echoes bytes), for behaviours the devcluster backend does not have.
* ``upstream_connections(pid, addresses)`` and ``rss_bytes(pid)``: /proc readings.

Every wait here is bounded in time; every process started is stopped by its pid.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import orjson
import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# -- ports and processes ---------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (nothing listens on it now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_backend(host: str, cluster: str, pod: str):
    """A devcluster backend process on ``host`` (any free port); call ``.stop()`` to end it."""
    from gateway.devcluster.backend import BackendProcess
    return BackendProcess(host, 0, cluster, pod).start(timeout=20.0)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process by its pid, SIGKILL it after ``timeout``; always reaped."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_listening(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


# -- the access log ----------------------------------------------------------------------------


class AccessLog:
    """The gateway's access log file: JSON lines, read as they are flushed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        return [orjson.loads(line) for line in data[:end + 1].splitlines() if line.strip()]

    def count(self) -> int:
        return len(self.entries())

    def wait_count(self, n: int, timeout: float = 10.0) -> list[dict]:
        """All entries once there are at least ``n`` of them (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.entries()
            if len(entries) >= n or time.monotonic() > deadline:
                assert len(entries) >= n, f"access log has {len(entries)} lines, expected {n}"
                return entries
            time.sleep(0.05)

    def since(self, mark: int, count: int, timeout: float = 10.0) -> list[dict]:
        """The ``count`` entries written after the first ``mark`` ones (waits for them)."""
        entries = self.wait_count(mark + count, timeout)
        return entries[mark:mark + count]

    def matching(self, predicate: Callable[[dict], bool], n: int = 1, timeout: float = 10.0) -> list[dict]:
        """The entries for which ``predicate`` holds, once there are at least ``n``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.entries() if predicate(e)]
            if len(found) >= n or time.monotonic() > deadline:
                assert len(found) >= n, f"{len(found)} matching access log lines, expected {n}"
                return found
            time.sleep(0.05)

    def by_ids(self, ids: Iterable[str], timeout: float = 10.0) -> dict[str, dict]:
        """The entries with these request ids (waits until all are there)."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        while True:
            found = {e.get("request_id"): e for e in self.entries() if e.get("request_id") in wanted}
            if len(found) == len(wanted) or time.monotonic() > deadline:
                missing = wanted - set(found)
                assert not missing, f"no access log line for request ids {sorted(missing)[:5]}"
                return found
            time.sleep(0.05)


# -- the gateway process -------------------------------------------------------------------------


def static_source(name: str, services: dict[str, list], weight: int | None = None) -> dict:
    """A static source; ``services`` maps "ns/name" or "name" to endpoint lists."""
    svcs = []
    for key, endpoints in services.items():
        ns, _, svc = key.rpartition("/")
        svcs.append({"name": svc, "namespace": ns or "default", "endpoints": list(endpoints)})
    src = {"name": name, "type": "static", "services": svcs}
    if weight is not None:
        src["weight"] = weight
    return src


class GatewayProcess:
    """``python -m gateway run --config FILE`` as a real process, on a free port."""

    def __init__(self, config: dict, workdir: Path, name: str = "gateway") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port("127.0.0.1")
        self.host = "127.0.0.1"
        self.config_path = self.workdir / f"{name}.yaml"
        self.log_path = self.workdir / f"{name}-access.log"
        self.out_path = self.workdir / f"{name}.out"
        cfg = dict(config)
        cfg["listen"] = f"127.0.0.1:{self.port}"
        cfg.setdefault("admin", "off")
        cfg["access_log"] = {"path": str(self.log_path), "flush_interval": "100ms"}
        timeouts = {"drain": "2s"}
        timeouts.update(cfg.get("timeouts") or {})
        cfg["timeouts"] = timeouts
        self.config = cfg
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.log = AccessLog(self.log_path)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0, args: Iterable[str] = ()) -> "GatewayProcess":
        """``args``: more options of ``gateway run`` (``--pid-file``, say)."""
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "gateway", "run", "--config", str(self.config_path), *args],
                cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_listening(self.host, self.port, timeout, self.proc)
        except BaseException:
            self.stop()
            raise RuntimeError(f"gateway did not start: {self.output()[-2000:]}") from None
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        try:
            return self.out_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def client(self, timeout: float = 10.0, source: str | None = None) -> "Client":
        return Client(self.host, self.port, timeout=timeout, source=source)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# -- a blocking HTTP/1.1 client over a raw socket -----------------------------------------------


class PeerClosed(ConnectionError):
    """The server closed the connection (EOF) while a response was expected."""


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    interim: list["Response"] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)   # a chunked body's

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def json(self):
        return orjson.loads(self.body)

    @property
    def closes(self) -> bool:
        conn = (self.header("connection") or "").lower()
        return "close" in conn or (self.version == "HTTP/1.0" and "keep-alive" not in conn)


class Client:
    """One client connection.  ``request`` sends and reads; lower-level pieces are public."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, source: str | None = None) -> None:
        # ``source``: the local address to connect from (any of 127/8 on loopback), so that a
        # test can be a client from a chosen address.
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.timeout = timeout

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # sending

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    @staticmethod
    def build(method: str, target: str, headers: list[tuple[str, str]] | dict | None = None,
              body: bytes | None = None, host: str | None = "gw.test", version: str = "HTTP/1.1",
              chunked: bool = False) -> bytes:
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        names = {k.lower() for k, _ in items}
        lines = [f"{method} {target} {version}"]
        if host is not None and "host" not in names:
            lines.append(f"Host: {host}")
        lines += [f"{k}: {v}" for k, v in items]
        payload = b""
        if chunked:
            lines.append("Transfer-Encoding: chunked")
            payload = encode_chunked([body] if body else [])
        elif body is not None:
            if "content-length" not in names:
                lines.append(f"Content-Length: {len(body)}")
            payload = body
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload

    def request(self, method: str, target: str, headers=None, body: bytes | None = None,
                host: str | None = "gw.test", version: str = "HTTP/1.1", chunked: bool = False) -> Response:
        self.send(self.build(method, target, headers, body, host, version, chunked))
        return self.read_response(method)

    # receiving

    def _fill(self, size: int = 65536) -> None:
        data = self.sock.recv(size)
        if not data:
            raise PeerClosed("connection closed by the server")
        self.buf += data

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_line(self, limit: int = 65536) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                return self._take(i + 2)[:-2]
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self._fill()

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill(max(65536, n - len(self.buf)))
        return self._take(n)

    def read_some(self, size: int = 65536) -> bytes:
        """Whatever is buffered or arrives next (at most ``size``); b"" on EOF."""
        if not self.buf:
            data = self.sock.recv(size)
            return data
        return self._take(min(size, len(self.buf)))

    def read_head(self) -> Response:
        """One response head (1xx included)."""
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ValueError("response head too large")
            self._fill()
        end = self.buf.find(b"\r\n\r\n")
        raw = self._take(end + 4).decode("latin-1")
        lines = raw.split("\r\n")[:-2]
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        return Response(version, int(code), reason, headers)

    def read_response(self, method: str = "GET") -> Response:
        """The next final response with its body; 1xx heads are kept in ``interim``."""
        interim = []
        while True:
            resp = self.read_head()
            if resp.status >= 200 or resp.status == 101:
                break
            interim.append(resp)
        resp.interim = interim
        parts: list[bytes] = []
        self.read_body(resp, method, parts.append)
        resp.body = b"".join(parts)
        return resp

    def read_body(self, resp: Response, method: str, sink: Callable[[bytes], None],
                  piece: int = 1 << 20, pace: Callable[[int], None] | None = None) -> int:
        """Stream ``resp``'s body to ``sink`` in pieces of at most ``piece`` bytes.

        ``pace(n)`` is called after each piece (a slow reader sleeps there).  Returns the size.
        """
        total = 0
        if method == "HEAD" or resp.status in (101, 204, 304) or 100 <= resp.status < 200:
            return 0
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")

        def deliver(n: int) -> None:
            nonlocal total
            while n:
                if not self.buf:
                    self._fill(min(piece, max(n, 1)))
                take = min(n, len(self.buf), piece)
                sink(self._take(take))
                total += take
                n -= take
                if pace is not None:
                    pace(take)

        if "chunked" in te:
            while True:
                size_line = self.read_line()
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while line := self.read_line():     # trailers up to the blank line
                        name, _, value = line.decode("latin-1").partition(":")
                        resp.trailers.append((name.strip(), value.strip()))
                    return total
                deliver(size)
                if self.read_line() != b"":
                    raise ValueError("chunk not followed by CRLF")
        if cl is not None:
            deliver(int(cl))
            return total
        # until close
        while True:
            if not self.buf:
                data = self.sock.recv(piece)
                if not data:
                    return total
                self.buf += data
            n = len(self.buf)
            sink(self._take(n))
            total += n
            if pace is not None:
                pace(n)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (EOF or reset) within ``timeout``;
        bytes arriving before that are kept in ``extra``."""
        self.extra = bytes(self.buf)
        self.buf.clear()
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.extra += data
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(self.timeout)


def encode_chunked(pieces: Iterable[bytes]) -> bytes:
    out = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p]
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def pattern_bytes(offset: int, n: int) -> bytes:
    """The devcluster backend's body bytes: byte ``i`` is ``i % 256``."""
    base = bytes(range(256))
    start = offset % 256
    reps = (start + n) // 256 + 1
    return (base * reps)[start:start + n]


def expected_sha256(n: int) -> str:
    """The sha256 of ``pattern_bytes(0, n)``, computed 64 KiB at a time."""
    block = bytes(range(256)) * 256      # 64 KiB, a multiple of 256: the pattern continues
    digest = hashlib.sha256()
    full, rest = divmod(n, len(block))
    for _ in range(full):
        digest.update(block)
    digest.update(block[:rest])
    return digest.hexdigest()


class Pacer:
    """Sleeps so that reading proceeds at about ``rate`` bytes/s (a slow client)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.done = 0

    def __call__(self, n: int) -> None:
        self.done += n
        ahead = self.done / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(min(ahead, 0.5))


# -- tiny special-purpose upstreams --------------------------------------------------------------


class TinyServer:
    """A TCP server in a thread that runs ``handler(conn)`` per accepted connection.

    Bounded: ``stop()`` closes the listener and every connection, and joins the threads.
    """

    def __init__(self, host: str, handler: Callable[[socket.socket], None]) -> None:
        self.host = host
        self.handler = handler
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(128)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._stopping = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name=f"tiny-{self.port}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(5.0)
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self.listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)


def answering(status: int, body: bytes = b""):
    """A TinyServer handler: every request on the connection gets ``status`` and ``body``."""
    def handle(conn: socket.socket) -> None:
        while read_request_head(conn):
            conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
    return handle


def read_request_head(conn: socket.socket, limit: float = 5.0) -> bytes:
    """Read from ``conn`` up to the end of one request head (bounded); b"" if it closed."""
    data = b""
    deadline = time.monotonic() + limit
    while b"\r\n\r\n" not in data and time.monotonic() < deadline and len(data) < 65536:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data


# -- /proc readings ------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Pids of the living descendants of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's VmRSS from a thread; ``peak`` is the largest value seen.

    ``tree``: the sum over the process and its descendants then (a supervisor's workers).
    """

    def __init__(self, pid: int, interval: float = 0.02, tree: bool = False) -> None:
        self.pids = [pid, *descendants(pid)] if tree else [pid]
        self.pid = pid
        self.interval = interval
        self.baseline = self.rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, self.rss())
            except (OSError, RuntimeError):
                return

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, self.rss())

    def rss(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _hex_addr(address: str) -> str:
    ip, port = address.rsplit(":", 1)
    packed = socket.inet_aton(ip)
    return "%08X:%04X" % (int.from_bytes(packed, "little"), int(port))


def upstream_connections(pid: int, addresses: Iterable[str]) -> set[tuple[str, str]]:
    """Established TCP connections of process ``pid`` to any of ``addresses`` ("ip:port"),
    as (local, remote) hex pairs from /proc/net/tcp."""
    wanted = {_hex_addr(a) for a in addresses}
    inodes = _socket_inodes(pid)
    found = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
            if state == "01" and remote in wanted and inode in inodes:
                found.add((local, remote))
    return found


class AdminClient:
    """Plain HTTP/1.1 to a gateway's admin port: (status, lower-case headers, body), JSON decoded."""

    def __init__(self, port: int, context=None, decode_json: bool = True) -> None:
        self.port = port
        self.context = context              # an SSLContext: the admin API over HTTPS
        self.decode_json = decode_json

    def request(self, method: str, path: str, body=None, headers: dict | None = None):
        import http.client

        import orjson
        if self.context is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = orjson.dumps(body) if body is not None else None
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            ctype = resp.getheader("content-type", "")
            json_body = self.decode_json and ctype.startswith("application/json") and raw
            payload = orjson.loads(raw) if json_body else raw
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
        finally:
            conn.close()

    def get(self, path: str):
        status, _, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def wait(self, path: str, predicate, timeout: float = 10.0):
        """GET ``path`` until ``predicate(body)`` holds (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(path)
            if predicate(body):
                return body
            assert time.monotonic() < deadline, f"{path}: condition not met in {timeout}s: {body}"
            time.sleep(0.05)

    def wait_up(self, proc, timeout: float = 20.0) -> None:
        """Until the admin port answers; fails at once if ``proc`` (a Popen) exited."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("GET", "/healthz")
                return
            except OSError:
                assert proc.poll() is None, f"gateway exited with {proc.returncode}"
                assert time.monotonic() < deadline, "admin API did not come up"
                time.sleep(0.05)


def start_with_admin(config: dict, workdir: Path, name: str) -> tuple[GatewayProcess, AdminClient]:
    """A gateway with its admin API on a free loopback port, started and answering."""
    admin_port = free_port()
    gw = GatewayProcess({**config, "admin": f"127.0.0.1:{admin_port}"}, workdir, name).start()
    try:
        wait_listening("127.0.0.1", admin_port, 10, gw.proc)
    except BaseException:
        gw.stop()
        raise
    return gw, AdminClient(admin_port)


def two_cluster_pods(per_cluster: int):
    """Backend processes, a fixture's body: cluster a on 127.0.0.2, .4, ..., b on .3, .5, ...,
    listed a-0, b-0, a-1, b-1, ...; all stopped at the end (stop() thaws a frozen one)."""
    started = []
    try:
        for i in range(per_cluster):
            started.append(start_backend(f"127.0.0.{2 + 2 * i}", "a", f"a-{i}"))
            started.append(start_backend(f"127.0.0.{3 + 2 * i}", "b", f"b-{i}"))
        yield started
    finally:
        for p in started:
            p.stop()
