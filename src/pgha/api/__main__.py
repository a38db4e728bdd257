"""``python -m pgha.api``: print docs/api.md's generated tables: the endpoints (from the routing
table) and Patroni's metric names (from ``pgha.api.patroni.PATRONI_METRICS``)."""

from pgha.api.patroni import markdown_table as patroni_metrics_table
from pgha.api.routes import markdown_table

print(markdown_table())
print(patroni_metrics_table(), end="")
