"""The local cluster: a small Kubernetes API server plus httpbin-like backends on loopback.

It lets the demo and the tests run "cluster A" and "cluster B" on one machine with no internet.
Everything is driven through the real ``kubernetes`` client, and nothing else in ``gateway/``
knows it is not a real cluster.

Modules: ``backend`` (the pods), ``apiserver`` (the API server), ``cluster`` (``LocalCluster``:
one API server and its pods), ``cli`` (``gateway devcluster ...``); the test helpers are in ``tests/support``.
Submodules are not imported here so that importing the package stays cheap.
"""
