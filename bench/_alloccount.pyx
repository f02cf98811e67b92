# cython: language_level=3
"""Counts calls to the object allocator (PyObject_Malloc / Calloc / Realloc of NULL), for
bench/allocs.py: the allocator is wrapped, counting, while ``start()``ed.  Objects served
from a type's free list (float, tuple, list, dict, ...) are not counted: the figure is a
lower bound, exact enough to compare two builds on the same workload."""

cdef extern from "Python.h":
    ctypedef struct PyMemAllocatorEx:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr) noexcept nogil
    ctypedef enum PyMemAllocatorDomain:
        PYMEM_DOMAIN_OBJ
    void PyMem_GetAllocator(PyMemAllocatorDomain domain, PyMemAllocatorEx *allocator)
    void PyMem_SetAllocator(PyMemAllocatorDomain domain, PyMemAllocatorEx *allocator)

cdef PyMemAllocatorEx _base
cdef PyMemAllocatorEx _counting
cdef unsigned long long _count = 0
cdef bint _on = False


cdef void *_malloc(void *ctx, size_t size) noexcept nogil:
    global _count
    _count += 1
    return _base.malloc(_base.ctx, size)


cdef void *_calloc(void *ctx, size_t nelem, size_t elsize) noexcept nogil:
    global _count
    _count += 1
    return _base.calloc(_base.ctx, nelem, elsize)


cdef void *_realloc(void *ctx, void *ptr, size_t new_size) noexcept nogil:
    global _count
    if ptr == NULL:
        _count += 1
    return _base.realloc(_base.ctx, ptr, new_size)


cdef void _free(void *ctx, void *ptr) noexcept nogil:
    _base.free(_base.ctx, ptr)


def start():
    global _on
    if not _on:
        PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &_base)
        _counting.ctx = NULL
        _counting.malloc = _malloc
        _counting.calloc = _calloc
        _counting.realloc = _realloc
        _counting.free = _free
        PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &_counting)
        _on = True


def count():
    return _count
