# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Plain-TCP client connections without uvloop's transports: accept, read and write in C.

At one request per connection uvloop's own per-connection work was a quarter of the
gateway's user time (issue #16, perf): a libuv handle and a transport object per socket, a
``call_soon`` for ``connection_made`` and one for ``connection_lost``, an entry in a Python
``WeakValueDictionary``, and TCP_NODELAY and getsockname calls.  Here one epoll set, which the
loop watches as a single reader, holds the listening sockets and the connections they accept;
a readable connection is read once into the reactor's buffer and its protocol gets the bytes.
Upstream connections are made here too (``Reactor.connect``: a non-blocking connect, its
deadline a loop timer), so that both ends of a plain request share one engine.

``SocketTransport`` is the part of ``asyncio.Transport`` the protocols use (write, writelines,
close, abort, pause/resume reading, write_eof, buffer limits, set_protocol, peername), with
asyncio's semantics: ``connection_lost`` comes in a later callback, a full write buffer pauses
the protocol's writing.  HTTPS listeners are served here too: ``_speedups.tls_transport``
drives OpenSSL on the socket itself.

Events are dispatched by fd number, never by pointer: an event for a socket closed meanwhile
finds nothing (or the socket that now has that number, which reads EAGAIN), so no event can
reach a freed object.
"""
import socket as _socket
from asyncio import CancelledError

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINPROGRESS, EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM, ETIMEDOUT, errno
from libc.math cimport ceil
from libc.stdlib cimport free, malloc
from libc.string cimport memset, strerror
from posix.uio cimport iovec, writev
from posix.unistd cimport close, read

from _speedups.clock cimport monotonic


cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short ntohs(unsigned short)
    unsigned short htons(unsigned short)
    unsigned int ntohl(unsigned int)

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    int inet_pton(int af, const char *src, void *dst)

cdef extern from "<netinet/tcp.h>" nogil:
    enum:
        TCP_NODELAY

cdef extern from "<netinet/in.h>" nogil:
    enum:
        IPPROTO_TCP


cdef enum:
    MAX_EVENTS = 128            # more ready sockets wait for the next loop iteration
    MAX_ACCEPTS = 64            # per readiness of a listening socket
    MAX_IOV = 64
    HIGH_WATER = 65536          # asyncio's default write buffer limits
    LOW_WATER = 16384

cdef double ACCEPT_PAUSE = 0.1  # out of file descriptors: accept again after this long


cdef object _os_error(int err):
    return OSError(err, strerror(err).decode())


cdef object _address(sockaddr_storage *addr):
    """``(host, port)`` (IPv6: ``(host, port, flowinfo, scope_id)``), as asyncio reports it."""
    cdef char text[64]
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    if addr.ss_family == AF_INET:
        v4 = <sockaddr_in *>addr
        inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text))
        return (text.decode(), ntohs(v4.sin_port))
    if addr.ss_family == AF_INET6:
        v6 = <sockaddr_in6 *>addr
        inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text))
        return (text.decode(), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo), v6.sin6_scope_id)
    return None


cdef class Protocol:
    """The base of the gateway's own protocols: the reactor hands them their bytes with a C
    call (a Python method call per read was ~300 instructions)."""

    cdef void received(self, bytes data) except *:
        self.data_received(data)

    cdef void deferred(self) except *:
        pass

    cdef void use_transport(self, object transport):
        """The connection's transport from now on (``send`` writes to it)."""
        self.transport = transport
        self.socket = transport if isinstance(transport, SocketTransport) else None
        self.transport_write = transport.write

    cdef void send(self, object data) except *:
        if self.socket is not None:
            self.socket.write(data)
        else:
            self.transport_write(data)


cdef class Watched:
    """Something in the reactor's epoll set, found by its fd."""

    cdef void on_event(self, unsigned int events) except *:
        pass


cdef class Reactor:
    """One epoll set inside the running loop, for the listening sockets and connections."""

    def __cinit__(self):
        self.epfd = -1
        self.read_buf = NULL
        self.events = NULL

    def __init__(self, loop):
        self.loop = loop
        self.watched = []
        self.lost = []
        self.lost_scheduled = False
        self.read_buf = <char *>malloc(READ_SIZE)
        self.events = <epoll_event *>malloc(MAX_EVENTS * sizeof(epoll_event))
        if self.read_buf == NULL or self.events == NULL:
            raise MemoryError()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise _os_error(errno)
        loop.add_reader(self.epfd, self.ready)

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)
        free(self.read_buf)
        free(self.events)

    def close(self):
        """Stop watching; what is still open (its owners had their chance) is closed: the
        listening sockets, and the connections (aborted)."""
        if self.epfd >= 0:
            for obj in list(self.watched):
                if isinstance(obj, SocketTransport):
                    obj.abort()
                elif isinstance(obj, Listener):
                    obj.close()
                elif isinstance(obj, Connector):
                    obj.cancel()
            self.loop.remove_reader(self.epfd)
            close(self.epfd)
            self.epfd = -1

    def listen(self, sock, protocol_factory):
        """Serve ``sock`` (a listening socket): each connection gets ``protocol_factory()``."""
        return Listener(self, sock, protocol_factory)

    cpdef Connector connect(self, str ip, int port, object protocol, double timeout,
                            object on_done, object token):
        """Connect to ``ip``:``port`` (a numeric address) without blocking; ``protocol`` gets
        the connection, as from ``loop.create_connection``, then ``on_done(token, transport,
        None)`` is called -- or ``on_done(token, None, OSError)`` when it is refused or not
        made within ``timeout`` (``errno.ETIMEDOUT``).  Always in a later callback.
        ``token`` is the caller's (no closure per connect).  In place of uvloop's create_connection: a coroutine, a Task, a transport
        with a libuv handle, a call_soon for connection_made.  None when ``ip`` is not a
        numeric address (a name is the loop's to resolve)."""
        cdef Connector c = Connector.__new__(Connector)
        cdef sockaddr_in *v4 = <sockaddr_in *>&c.addr
        cdef sockaddr_in6 *v6 = <sockaddr_in6 *>&c.addr
        cdef socklen_t size
        cdef int one = 1, fd, family
        cdef bytes text = ip.encode()
        memset(&c.addr, 0, sizeof(c.addr))
        if inet_pton(AF_INET, text, &v4.sin_addr) == 1:
            family, size = AF_INET, sizeof(sockaddr_in)
            v4.sin_family = AF_INET
            v4.sin_port = htons(port)
        elif inet_pton(AF_INET6, text, &v6.sin6_addr) == 1:
            family, size = AF_INET6, sizeof(sockaddr_in6)
            v6.sin6_family = AF_INET6
            v6.sin6_port = htons(port)
        else:
            return None
        fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
        if fd < 0:
            raise _os_error(errno)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
        c.reactor, c.fd, c.protocol, c.on_done, c.token = self, fd, protocol, on_done, token
        if connect(fd, <sockaddr *>&c.addr, size) < 0 and errno != EINPROGRESS:
            c.fd = -1
            close(fd)
            self.loop.call_soon(c.deliver_failure, _os_error(errno))
            return c
        # Writable once connected or failed: also when connect() returned 0 at once, so the
        # caller hears in a later callback either way.
        try:
            self.watch(fd, c, EPOLLOUT, EPOLL_CTL_ADD)
        except OSError:
            c.fd = -1
            close(fd)
            raise
        c.deadline = monotonic() + timeout
        c.timer = self.loop.call_later(timeout, c.time_out)
        return c

    def ready(self):
        """The epoll set has events: hand each to its listener or connection."""
        cdef int n, i, fd
        cdef Watched obj
        if self.epfd < 0:
            return
        self.wakeups += 1
        n = epoll_wait(self.epfd, self.events, MAX_EVENTS, 0)
        self.dispatching = True
        try:
            for i in range(n):
                fd = self.events[i].data.fd
                if fd >= len(self.watched):
                    continue
                obj = <Watched>self.watched[fd]
                if obj is not None:
                    obj.on_event(self.events[i].events)
        finally:
            if self.deferred_first is not None:
                self.run_deferred()
            self.dispatching = False
            if self.lost and not self.lost_scheduled:
                self.deliver_lost()

    cdef bint defer(self, Protocol protocol):
        """``protocol.deferred()`` once every event in hand is handled, with no loop callback:
        an HTTP/2 connection writes the frames of all the responses one wakeup brought at
        once.  False outside a dispatch: the caller asks the loop instead."""
        if not self.dispatching:
            return False
        if protocol.next_deferred is not None or protocol is self.deferred_last:
            return True                                 # once is enough
        if self.deferred_last is None:
            self.deferred_first = protocol
        else:
            self.deferred_last.next_deferred = protocol
        self.deferred_last = protocol
        return True

    cdef void run_deferred(self):
        """Those deferred while these run go too (still inside the dispatch)."""
        cdef Protocol protocol
        while self.deferred_first is not None:
            protocol = self.deferred_first
            self.deferred_first, protocol.next_deferred = protocol.next_deferred, None
            if self.deferred_first is None:
                self.deferred_last = None
            try:
                protocol.deferred()
            except Exception as error:
                self.loop.call_exception_handler({"message": "a deferred call failed",
                                                  "exception": error, "protocol": protocol})

    cdef int watch(self, int fd, Watched obj, unsigned int events, int op) except -1:
        cdef epoll_event ev
        memset(&ev, 0, sizeof(ev))
        ev.events = events
        ev.data.fd = fd
        if epoll_ctl(self.epfd, op, fd, &ev) < 0:
            raise _os_error(errno)
        if op == EPOLL_CTL_ADD:
            while fd >= len(self.watched):
                self.watched.extend([None] * (fd + 64 - len(self.watched)))
            self.watched[fd] = obj
        return 0

    cdef void unwatch(self, int fd):
        """Events for ``fd`` stop (it stays known, as when a connection parks)."""
        cdef epoll_event ev
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, &ev)

    cdef void forget(self, int fd):
        """``fd`` is closing: an event still queued for it finds nothing."""
        if fd < len(self.watched):
            self.watched[fd] = None

    cdef void lose_later(self, SocketTransport transport, object exc):
        """``connection_lost`` in a later callback, as asyncio promises: one for all of them.
        Closed while the reactor dispatches events: once they are all handled (the close came
        from inside a protocol's callback, which has returned by then), with no loop callback."""
        self.lost.append((transport, exc))
        if not self.lost_scheduled and not self.dispatching:
            self.lost_scheduled = True
            self.loop.call_soon(self.deliver_lost)

    def deliver_lost(self):
        cdef SocketTransport transport
        lost, self.lost = self.lost, []
        self.lost_scheduled = False
        for transport, exc in lost:
            protocol, transport.protocol = transport.protocol, None
            try:
                protocol.connection_lost(exc)
            except Exception as error:
                self.report(error, "protocol.connection_lost() failed", transport, protocol)

    cdef void report(self, object exc, str what, object transport, object protocol):
        self.loop.call_exception_handler({"message": what, "exception": exc,
                                          "transport": transport, "protocol": protocol})


cdef class Listener(Watched):
    """A listening socket served by the reactor; ``sockets`` and ``close()`` as asyncio's Server."""

    def __init__(self, Reactor reactor, sock, protocol_factory):
        self.reactor = reactor
        self.sock = sock
        self.factory = protocol_factory
        self.fd = sock.fileno()
        self.resume = None
        sock.setblocking(False)
        # Accepted sockets inherit the option on Linux: no setsockopt per connection.
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        reactor.watch(self.fd, self, EPOLLIN, EPOLL_CTL_ADD)

    @property
    def sockets(self):
        return [self.sock] if self.fd >= 0 else []

    def is_serving(self):
        return self.fd >= 0

    def close(self):
        """Stop accepting; connections already accepted stay open."""
        if self.fd < 0:
            return
        if self.resume is not None:
            self.resume.cancel()
        else:
            # Explicitly: the worker holds a duplicate of this fd while it drains the queue,
            # and a registration lasts as long as any duplicate does.
            self.reactor.unwatch(self.fd)
        self.reactor.forget(self.fd)
        self.fd = -1
        self.sock.close()

    def adopt(self, sock):
        """Serve a connection accepted elsewhere (a listener's queue emptied when it closes)."""
        cdef sockaddr_storage addr
        cdef socklen_t size = sizeof(addr)
        sock.setblocking(False)
        fd = sock.detach()
        if getpeername(fd, <sockaddr *>&addr, &size) < 0:
            addr.ss_family = 0
        self.start(fd, &addr)

    cdef void on_event(self, unsigned int events) except *:
        """Accept one connection, or, when the queue was not empty at the last wakeup either
        (a burst), up to MAX_ACCEPTS until it is.  One at a time, a second accept() would
        only find the queue empty: a system call per connection for nothing (nginx's
        default, multi_accept off, is one per event).  The listener is level-triggered:
        what is left in the queue wakes the loop again."""
        cdef sockaddr_storage addr
        cdef socklen_t size
        cdef int fd, err
        cdef int limit = MAX_ACCEPTS if self.ready_at + 1 == self.reactor.wakeups else 1
        self.ready_at = self.reactor.wakeups
        for _ in range(limit):
            if self.fd < 0:         # a protocol closed the listener
                return
            size = sizeof(addr)
            fd = accept4(self.fd, <sockaddr *>&addr, &size, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                err = errno
                if err == EAGAIN:       # the queue is empty
                    return
                if err in (EMFILE, ENFILE, ENOBUFS, ENOMEM):
                    self.pause_accepting(err)
                    return
                continue                # that connection failed (reset, network errors)
            self.start(fd, &addr)

    cdef void start(self, int fd, sockaddr_storage *addr) except *:
        cdef SocketTransport transport = SocketTransport.__new__(SocketTransport)
        transport.init(self.reactor, fd, addr)
        try:
            transport.protocol = self.factory()
            self.reactor.watch(fd, transport, EPOLLIN, EPOLL_CTL_ADD)
        except Exception as exc:
            close(fd)
            self.reactor.report(exc, "accepting a connection failed", transport, None)
            return
        try:
            transport.protocol.connection_made(transport)
        except Exception as exc:
            self.reactor.report(exc, "protocol.connection_made() failed", transport,
                                transport.protocol)
            transport.fail(exc)

    cdef void pause_accepting(self, int err) except *:
        """Out of descriptors: the queue stays readable, so stop watching it for a moment."""
        self.reactor.report(_os_error(err), "accepting connections paused", self, None)
        self.reactor.unwatch(self.fd)
        self.resume = self.reactor.loop.call_later(ACCEPT_PAUSE, self.resume_accepting)

    def resume_accepting(self):
        self.resume = None
        if self.fd >= 0:
            self.reactor.watch(self.fd, self, EPOLLIN, EPOLL_CTL_ADD)


cdef class Connector(Watched):
    """A connect in progress (Reactor.connect): writable means connected or failed."""

    cdef void on_event(self, unsigned int events) except *:
        cdef int err = 0, fd = self.fd
        cdef socklen_t size = sizeof(err)
        cdef SocketTransport transport
        if fd < 0:
            return
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size) < 0:
            err = errno
        if err == EINPROGRESS:
            return
        self.fd = -1
        self.timer.cancel()
        if err:
            self.reactor.forget(fd)
            close(fd)
            self.done(None, _os_error(err))
            return
        transport = SocketTransport.__new__(SocketTransport)
        transport.init(self.reactor, fd, &self.addr)
        transport.protocol = self.protocol
        self.reactor.watched[fd] = transport
        self.reactor.watch(fd, transport, EPOLLIN, EPOLL_CTL_MOD)
        try:
            self.protocol.connection_made(transport)
        except Exception as exc:
            self.reactor.report(exc, "protocol.connection_made() failed", transport, self.protocol)
            transport.fail(exc)
            self.done(None, exc)
            return
        self.done(transport, None)

    cdef void done(self, object transport, object exc) except *:
        on_done, self.on_done, self.protocol = self.on_done, None, None
        if on_done is None:                 # cancelled meanwhile
            return
        try:
            on_done(self.token, transport, exc)
        except Exception as error:
            self.reactor.report(error, "a connect callback failed", transport, None)

    def time_out(self):
        cdef double left = self.deadline - monotonic()
        if self.fd < 0:
            return
        if left > 0:        # the loop's clock, read before this iteration's work, ran ahead
            self.timer = self.reactor.loop.call_later(ceil(left * 1000.0) / 1000.0, self.time_out)
            return
        self.close_socket()
        self.done(None, _os_error(ETIMEDOUT))

    def deliver_failure(self, exc):
        self.done(None, exc)

    def cancel(self):
        """Give up (the reactor closes): no callback follows."""
        if self.fd >= 0:
            self.close_socket()
            self.timer.cancel()
        self.on_done = self.protocol = None

    cdef void close_socket(self):
        self.reactor.forget(self.fd)
        close(self.fd)
        self.fd = -1


cdef class SocketTransport(Watched):
    """One connection, accepted or made: asyncio's transport interface over a non-blocking fd."""

    cdef void init(self, Reactor reactor, int fd, sockaddr_storage *addr):
        self.reactor = reactor
        self.fd = fd
        self.addr = addr[0]
        self.pending = []
        self.first_sent = 0
        self.pending_size = 0
        self.watching = EPOLLIN
        self.parked = False
        self.reading = True
        self.read_eof = False
        self.closing = False
        self.eof_written = False
        self.write_paused = False
        self.high_water = HIGH_WATER
        self.low_water = LOW_WATER

    # -- events -----------------------------------------------------------

    cdef void on_event(self, unsigned int events) except *:
        cdef object protocol = self.protocol
        try:
            if self.pending and events & (EPOLLOUT | EPOLLERR | EPOLLHUP):
                self.flush()
            if self.fd < 0:
                return
            if self.reading:
                if events & (EPOLLIN | EPOLLERR | EPOLLHUP):
                    self.read_once()
            elif events & (EPOLLERR | EPOLLHUP) and not self.pending:
                self.park()
        except Exception as exc:
            self.reactor.report(exc, "a protocol callback failed", self, protocol)
            self.fail(exc)

    cdef void read_once(self) except *:
        cdef Py_ssize_t n = read(self.fd, self.reactor.read_buf, READ_SIZE)
        if n > 0:
            self.deliver(PyBytes_FromStringAndSize(self.reactor.read_buf, n))
        elif n == 0:
            self.read_eof = True
            self.reading = False
            self.rewatch()
            if not self.protocol.eof_received():
                self.close()
        elif errno != EAGAIN and errno != EINTR:
            self.fail(_os_error(errno))

    cdef void deliver(self, bytes data) except *:
        """Bytes read to the protocol: in C to the gateway's own, by name to any other."""
        if isinstance(self.protocol, Protocol):
            (<Protocol>self.protocol).received(data)
        else:
            self.protocol.data_received(data)

    cdef void park(self) except *:
        """Hung up while not reading: leave the set until reading resumes (hang-ups cannot be
        masked, and would wake the loop for nothing)."""
        self.reactor.unwatch(self.fd)
        self.parked = True

    cdef unsigned int wanted(self):
        """The events this connection waits for now."""
        return (EPOLLIN if self.reading else 0) | (EPOLLOUT if self.pending else 0)

    cdef void rewatch(self) except *:
        cdef unsigned int want
        if self.fd < 0:
            return
        want = self.wanted()
        if self.parked:
            if want:
                self.parked = False
                self.watching = want
                self.reactor.watch(self.fd, self, want, EPOLL_CTL_ADD)
        elif want != self.watching:
            self.watching = want
            self.reactor.watch(self.fd, self, want, EPOLL_CTL_MOD)

    # -- writing ----------------------------------------------------------

    cpdef write(self, data):
        cdef Py_buffer view
        cdef iovec one
        cdef Py_ssize_t sent, size
        if self.eof_written:
            raise RuntimeError("write() after write_eof()")
        if self.closing or self.fd < 0:
            return
        if self.pending:
            self.queue(data, 0)
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        size = one.iov_len = view.len
        one.iov_base = view.buf
        sent = _writev_once(self.fd, &one, 1) if size else 0
        PyBuffer_Release(&view)
        if sent < 0:
            if -sent != EAGAIN:
                self.fail(_os_error(-sent))
                return
            sent = 0
        if sent < size:
            self.queue(data, sent)

    def writelines(self, list_of_data):
        """One writev for all of them (a response head and a view of its body: no copy)."""
        cdef iovec iov[MAX_IOV]
        cdef Py_buffer views[MAX_IOV]
        cdef Py_ssize_t sizes[MAX_IOV]
        cdef int count = 0, i
        cdef Py_ssize_t sent, total = 0
        items = list_of_data if isinstance(list_of_data, (list, tuple)) else list(list_of_data)
        if self.eof_written:
            raise RuntimeError("writelines() after write_eof()")
        if self.closing or self.fd < 0:
            return
        if self.pending or len(items) > MAX_IOV:
            for data in items:
                self.write(data)
            return
        try:
            for data in items:
                PyObject_GetBuffer(data, &views[count], PyBUF_SIMPLE)
                iov[count].iov_base = views[count].buf
                iov[count].iov_len = sizes[count] = views[count].len
                total += sizes[count]
                count += 1
            sent = _writev_once(self.fd, iov, count) if total else 0
        finally:
            for i in range(count):
                PyBuffer_Release(&views[i])
        if sent < 0:
            if -sent != EAGAIN:
                self.fail(_os_error(-sent))
                return
            sent = 0
        if sent == total:
            return
        for i in range(count):      # keep what did not go
            if sent >= sizes[i]:
                sent -= sizes[i]
                continue
            self.queue(items[i], sent)
            sent = 0

    cdef void queue(self, object data, Py_ssize_t offset) except *:
        """Keep ``data[offset:]`` until writable (a copy unless bytes: a caller may reuse its
        buffer)."""
        cdef bytes rest
        if type(data) is bytes:
            rest = data[offset:] if offset else data
        else:
            rest = bytes(memoryview(data).cast("B")[offset:])
        if not rest:
            return
        self.pending.append(rest)
        self.pending_size += len(rest)
        self.rewatch()
        if not self.write_paused and self.pending_size > self.high_water:
            self.write_paused = True
            self.protocol.pause_writing()

    cdef void flush(self) except *:
        cdef iovec iov[MAX_IOV]
        cdef int count = 0
        cdef bytes data
        cdef Py_ssize_t sent, n, done
        for data in self.pending[:MAX_IOV]:
            iov[count].iov_base = <char *>data
            iov[count].iov_len = len(data)
            count += 1
        iov[0].iov_base = <char *>iov[0].iov_base + self.first_sent
        iov[0].iov_len -= self.first_sent
        sent = _writev_once(self.fd, iov, count)
        if sent < 0:
            if -sent != EAGAIN:
                self.fail(_os_error(-sent))
            return
        self.pending_size -= sent
        sent += self.first_sent
        done = 0
        for data in self.pending:
            n = len(data)
            if sent < n:
                break
            sent -= n
            done += 1
        del self.pending[:done]
        self.first_sent = sent
        self.flushed()

    cdef void flushed(self) except *:
        """After writing from the queue: once it is empty, close if closing, else watch for
        what is wanted now (and end the sending side if asked); below the low mark the
        protocol may write again."""
        if not self.pending:
            if self.closing:
                self.finish(None)
                return
            self.rewatch()
            if self.eof_written:
                shutdown(self.fd, SHUT_WR)
        if self.write_paused and self.pending_size <= self.low_water:
            self.write_paused = False
            self.protocol.resume_writing()

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self.closing or self.eof_written or self.fd < 0:
            return
        self.eof_written = True
        if not self.pending:
            shutdown(self.fd, SHUT_WR)

    def get_write_buffer_size(self):
        return self.pending_size

    def get_write_buffer_limits(self):
        return (self.low_water, self.high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self.high_water, self.low_water = high, low

    # -- reading ----------------------------------------------------------

    def pause_reading(self):
        if self.reading and not self.closing:
            self.reading = False
            self.rewatch()

    def resume_reading(self):
        if not self.reading and not self.closing and not self.read_eof:
            self.reading = True
            self.rewatch()

    def is_reading(self):
        return self.reading and not self.closing

    # -- closing ----------------------------------------------------------

    def close(self):
        """Close once what is buffered is written; ``connection_lost(None)`` follows."""
        if self.closing:
            return
        self.closing = True
        self.reading = False
        if self.pending:
            self.rewatch()
        else:
            self.finish(None)

    def abort(self):
        """Close now, dropping what is buffered."""
        self.closing = True
        self.finish(None)

    def is_closing(self):
        return self.closing

    cdef void fail(self, object exc) except *:
        self.closing = True
        self.finish(exc)

    cdef void finish(self, object exc) except *:
        if self.fd < 0:
            return
        self.reactor.forget(self.fd)            # closing the fd takes it out of the set
        close(self.fd)
        self.fd = -1
        self.pending = []
        self.pending_size = 0
        if self.protocol is not None:           # None: a TLS handshake that never completed
            self.reactor.lose_later(self, exc)

    # -- the rest of asyncio.Transport --------------------------------------

    def get_extra_info(self, name, default=None):
        cdef sockaddr_storage addr
        cdef socklen_t size = sizeof(addr)
        if name == "peername":
            if self.peer is None:
                self.peer = _address(&self.addr)
            return self.peer if self.peer is not None else default
        if name == "sockname" and self.fd >= 0:
            if getsockname(self.fd, <sockaddr *>&addr, &size) == 0:
                return _address(&addr)
        return default

    cpdef int set_option(self, int level, int option, int value) except -1:
        """setsockopt() with an int value (the upstream liveness options)."""
        if self.fd >= 0 and setsockopt(self.fd, level, option, &value, sizeof(value)) < 0:
            raise _os_error(errno)
        return 0

    def set_protocol(self, protocol):
        self.protocol = protocol

    def get_protocol(self):
        return self.protocol

    def __repr__(self):
        return f"<SocketTransport fd={self.fd} peer={self.get_extra_info('peername')}>"


cdef Py_ssize_t _writev_once(int fd, iovec *iov, int count):
    """What one writev() sends, retried on EINTR; -errno when nothing went."""
    cdef Py_ssize_t n
    while True:
        n = writev(fd, iov, count)
        if n >= 0:
            return n
        if errno != EINTR:
            return -errno


cpdef open_connection(Reactor reactor, object loop, str ip, int port, object protocol, double timeout,
                      object on_done, object token, object ssl=None, str server_hostname=None):
    """Connect ``protocol`` to ``ip``:``port``; then ``on_done(token, transport, None)``, or
    ``on_done(token, None, exc)``: an OSError (errno ETIMEDOUT past ``timeout``, which bounds
    a TLS handshake too) or what else the connect raised.  Plain TCP to a numeric address is
    made on the reactor (no coroutine, Task, timer or libuv transport); TLS and a name to
    resolve on the loop (its ssl machinery needs its own transports)."""
    if ssl is None and reactor is not None and reactor.connect(
            ip, port, protocol, timeout, on_done, token) is not None:
        return
    _connect_on_loop(loop, ip, port, protocol, timeout, on_done, token, ssl, server_hostname)


def _connect_on_loop(loop, str ip, int port, protocol, double timeout, on_done, token, ssl,
                     str server_hostname):
    factory = lambda: protocol
    if ssl is None:
        connecting = loop.create_connection(factory, ip, port)
    else:
        connecting = loop.create_connection(factory, ip, port, ssl=ssl, server_hostname=server_hostname,
                                            ssl_handshake_timeout=timeout)
    task = loop.create_task(connecting)
    timer = loop.call_later(timeout, task.cancel)
    task.add_done_callback(lambda done: _task_connected(done, timer, on_done, token))


def _task_connected(task, timer, on_done, token):
    timer.cancel()
    transport = exc = None
    try:
        transport = task.result()[0]
    except CancelledError:
        exc = TimeoutError(ETIMEDOUT, "timed out")
    except Exception as error:
        exc = error
    on_done(token, transport, exc)
