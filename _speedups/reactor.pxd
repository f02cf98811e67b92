cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        int fd
    struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        unsigned short sa_family
    struct sockaddr_storage:
        unsigned short ss_family
    int accept4(int fd, sockaddr *addr, socklen_t *addrlen, int flags)
    int socket(int domain, int type, int protocol)
    int connect(int fd, const sockaddr *addr, socklen_t addrlen)
    int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
    int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
    int getpeername(int fd, sockaddr *addr, socklen_t *addrlen)
    int getsockname(int fd, sockaddr *addr, socklen_t *addrlen)
    int shutdown(int fd, int how)
    enum:
        SOCK_STREAM
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        SOL_SOCKET
        SO_ERROR
        SHUT_WR
        AF_INET
        AF_INET6


cdef enum:
    READ_SIZE = 262144              # one read per readiness, as uvloop's buffer


cdef class SocketTransport


cdef class Protocol:
    """A connection's protocol that the reactor calls in C (the gateway's own); any other
    object is called as an asyncio protocol, by method name.  It writes to the reactor's
    transports in C too (``send``)."""
    cdef object transport                           # asyncio's interface (use_transport)
    cdef SocketTransport socket                     # the same when it is the reactor's
    cdef object transport_write                     # else its write, bound once
    cdef Protocol next_deferred                     # the one deferred after it (Reactor.defer)
    cdef void received(self, bytes data) except *   # its data_received
    cdef void deferred(self) except *               # once the wakeup's events are handled
    cdef void use_transport(self, object transport)
    cdef void send(self, object data) except *


cdef class Watched:
    cdef void on_event(self, unsigned int events) except *


cdef class Reactor:
    cdef int epfd
    cdef object loop
    cdef list watched               # fd -> its Listener or SocketTransport (or None)
    cdef list lost                  # (transport, exc) waiting for connection_lost
    cdef bint lost_scheduled
    cdef bint dispatching           # inside ready(): what is lost goes when it returns
    # Protocols to call once the events in hand are handled, chained by next_deferred
    cdef Protocol deferred_first, deferred_last
    cdef readonly unsigned long long wakeups    # times the loop found the set ready (a busy
    #                                             loop shows here)
    cdef char *read_buf
    cdef epoll_event *events

    cdef int watch(self, int fd, Watched obj, unsigned int events, int op) except -1
    cdef void unwatch(self, int fd)
    cdef void forget(self, int fd)
    cdef void lose_later(self, SocketTransport transport, object exc)
    cdef bint defer(self, Protocol protocol)
    cdef void run_deferred(self)
    cpdef Connector connect(self, str ip, int port, object protocol, double timeout,
                            object on_done, object token)
    cdef void report(self, object exc, str what, object transport, object protocol)


cdef class Listener(Watched):
    cdef Reactor reactor
    cdef object sock
    cdef object factory
    cdef int fd
    cdef object resume              # the call_later that resumes accepting, while paused
    cdef unsigned long long ready_at    # the reactor's wakeup that last found it ready

    cdef void start(self, int fd, sockaddr_storage *addr) except *
    cdef void pause_accepting(self, int err) except *


cdef class Connector(Watched):
    cdef Reactor reactor
    cdef int fd                     # -1 once connected, failed or cancelled
    cdef sockaddr_storage addr
    cdef object protocol
    cdef object on_done             # on_done(token, transport or None, OSError or None)
    cdef readonly object token      # the caller's, for on_done
    cdef object timer
    cdef double deadline            # monotonic: the timer may come early, the connect fails then

    cdef void done(self, object transport, object exc) except *
    cdef void close_socket(self)


cdef class SocketTransport(Watched):
    cdef Reactor reactor
    cdef int fd                     # -1 once closed
    cdef public object protocol
    cdef sockaddr_storage addr      # the peer, from accept
    cdef object peer                # its (host, port), made when first asked
    cdef list pending               # bytes not yet written, in order
    cdef Py_ssize_t first_sent      # of pending[0]
    cdef Py_ssize_t pending_size
    cdef Py_ssize_t high_water, low_water
    cdef unsigned int watching      # the events epoll has for this fd
    cdef bint parked                # out of the epoll set: hung up while not reading
    cdef bint reading, read_eof, closing, eof_written, write_paused

    cdef void init(self, Reactor reactor, int fd, sockaddr_storage *addr)
    cpdef write(self, data)
    cpdef int set_option(self, int level, int option, int value) except -1
    cdef void read_once(self) except *
    cdef void deliver(self, bytes data) except *
    cdef void park(self) except *
    cdef unsigned int wanted(self)
    cdef void rewatch(self) except *
    cdef void queue(self, object data, Py_ssize_t offset) except *
    cdef void flush(self) except *
    cdef void flushed(self) except *
    cdef void fail(self, object exc) except *
    cdef void finish(self, object exc) except *


cpdef open_connection(Reactor reactor, object loop, str ip, int port, object protocol, double timeout,
                      object on_done, object token, object ssl=*, str server_hostname=*)
