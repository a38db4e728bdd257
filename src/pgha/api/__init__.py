"""The agent's REST API: health checks, cluster state, and operator intents written to the DCS."""

from pgha.api.metrics import AgentMetrics
from pgha.api.server import AddressInUseError, ApiServer, ApiStartError

__all__ = ["AddressInUseError", "AgentMetrics", "ApiServer", "ApiStartError"]
