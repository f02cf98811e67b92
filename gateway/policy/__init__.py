"""Edge policy, the Python side: what the compiled checks (``_speedups/policy.pyx``: IP
filters, the replica's rate-limit buckets) call out to.

* ``auth``: Basic, API keys and JWT (with its JWKS fetcher), verdicts cached per credential;
* ``ext_authz``: external authorization over HTTP, the exchange waiting for the verdict;
* ``redis_store``: global rate limits, GCRA buckets in Redis shared by every replica.
"""
