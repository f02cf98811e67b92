"""Routes from Kubernetes: Gateway API objects (GatewayClass, Gateway, HTTPRoute, ReferenceGrant)
turned into the same route config the file gives, with status written back.

``translate`` is the pure part (objects in, routes, services and statuses out);
``controller`` watches the clusters, applies the result through the gateway's reload
path and writes the statuses; ``leader`` elects, through a Lease, the one replica that writes.
"""
