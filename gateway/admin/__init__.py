"""The console: admin HTTP API, Prometheus metrics, web dashboard, and the CLI over them.

``views`` is the one module that reads the gateway's internals; ``server`` serves them;
``cli`` is the ``gateway status|sources|services|routes|explain|source|service|route``
commands, which speak to the admin API over HTTP.  Importing this package imports nothing
else (the CLI must start fast and must not need the compiled data plane).
"""
