"""Cluster DNS (CoreDNS-like) of the node proxy: `records` answers names of the cluster zone
from a view of Services/EndpointSlices/Namespaces (pure), `source` keeps that view over the
shared informers, `forward` sends other names to the node's upstream resolvers, `server`
is the UDP/TCP wire server."""

from .forward import Forwarder, upstreams_from_resolv_conf
from .records import EndpointAddr, RecordLookup, Result
from .server import DNSServer, QueryHandler
from .source import ClusterCache

__all__ = ["ClusterCache", "DNSServer", "EndpointAddr", "Forwarder", "QueryHandler",
           "RecordLookup", "Result", "upstreams_from_resolv_conf"]
