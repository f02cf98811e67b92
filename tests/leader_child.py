"""A LeaderElector in a process of its own, for the test that kills a leader with SIGKILL.

    python tests/leader_child.py KUBECONFIG CONTEXT NAMESPACE NAME IDENTITY LEASE RENEW RETRY

Prints ``READY`` once started, then a line per callback: ``STARTED``, ``STOPPED``,
``LEADER <identity>``. Ends (releasing the lease if it holds it) when its stdin closes, so it
never outlives a test run that forgot it.
"""
from __future__ import annotations

import asyncio
import sys

from kubernetes import client, config

from gateway.gatewayapi.leader import LeaderElector


def say(*words: str) -> None:
    print(*words, flush=True)


async def main(kubeconfig: str, context: str, namespace: str, name: str, identity: str,
               lease: str, renew: str, retry: str) -> None:
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    configuration.retries = 0
    with client.ApiClient(configuration) as api:
        elector = LeaderElector(api, namespace, name, identity=identity, lease_duration=int(lease),
                                renew_deadline=float(renew), retry_period=float(retry),
                                on_started_leading=lambda: say("STARTED"),
                                on_stopped_leading=lambda: say("STOPPED"),
                                on_new_leader=lambda leader: say("LEADER", leader))
        elector.start()
        say("READY")
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await asyncio.to_thread(elector.stop)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
