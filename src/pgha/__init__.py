"""pgha: PostgreSQL high availability in one package."""

__version__ = "0.1.0"
