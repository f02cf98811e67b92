"""Multi-cluster HTTP gateway for Kubernetes."""

__version__ = "0.1.0"
