"""What the REST API sees of the running agent (the agent implements AgentHandle)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry

from pgha.config import NodeConfig
from pgha.core.actions import Decision
from pgha.core.model import ClusterConfig, ClusterView, LocalState, MemberInfo
from pgha.dcs.store import ClusterStore

if TYPE_CHECKING:
    from pgha.api.metrics import AgentMetrics


@dataclass(frozen=True)
class NodeSnapshot:
    """The agent's latest loop, read atomically by the API."""

    # Last good read of the DCS (None before the first one); view.dcs_error says if it is stale.
    view: ClusterView | None
    local: LocalState | None
    decision: Decision | None
    # What this agent last published at members/<name>.
    member: MemberInfo | None
    # The effective cluster configuration.
    cluster_config: ClusterConfig
    # Whether this agent holds the leader key with a lease that is certainly alive.
    holds_lease: bool
    # Monotonic time of the snapshot.
    at: float


class AgentHandle(Protocol):
    config: NodeConfig
    store: ClusterStore
    registry: CollectorRegistry
    # Its metrics, whose recorder keeps the dashboard's lag samples and events.
    metrics: AgentMetrics

    def snapshot(self) -> NodeSnapshot: ...

    def wake(self) -> None:
        """Run the next HA loop now (after an intent was written)."""
        ...

    def live_lsn(self) -> int | None:
        """This server's WAL position read just now (None if it cannot be read quickly).

        /status is what an election probe reads; the loop's snapshot can be a loop_wait
        old, and a replica that received WAL since then would be ranked too low."""
        ...

    def failsafe_confirm(self, leader: str) -> bool:
        """The leader asks us, during a DCS outage, to confirm it is still our leader."""
        ...
