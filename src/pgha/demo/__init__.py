"""A local cluster on one machine: its own etcd and N agents, for trying pgha out.

The same class drives `pgha demo up/down`, the integration tests and the
benchmarks, so what a new user runs is what the tests prove.

Ports, from ``port_base`` P: etcd client P, etcd peer P+1; node i (1-based):
PostgreSQL P+10i, REST API P+10i+1, PgBouncer P+10i+2.  The default P=15400 keeps every
port below Linux's ephemeral range (32768-60999), where a client retrying a closed port can
end up connected to itself.
"""

from pgha.demo.cluster import DemoCluster
from pgha.demo.lab import _recorded_lab
from pgha.demo.procs import pid_alive, stop_pid
from pgha.demo.state import (
    DemoError,
    DemoNode,
    DemoState,
    describe,
    healthy,
    sync_published,
)

__all__ = [
    "DemoCluster",
    "DemoError",
    "DemoNode",
    "DemoState",
    "_recorded_lab",
    "describe",
    "healthy",
    "pid_alive",
    "stop_pid",
    "sync_published",
]
