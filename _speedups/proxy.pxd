from _speedups.context cimport Context


cdef class ProxyContext(Context):
    pass
