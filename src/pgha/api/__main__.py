"""``python -m pgha.api``: print the endpoint table of docs/api.md (generated from the routing table)."""

from pgha.api.routes import markdown_table

print(markdown_table(), end="")
