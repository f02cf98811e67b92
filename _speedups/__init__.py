"""Compiled hot path of the gateway (Cython).

The modules here are built by ``setup.py``; there is no pure-Python fallback.
"""
