"""Agent logging: one line per event, timestamps, never secrets."""

from __future__ import annotations

import logging
import sys

from pgha.config import NodeConfig
from pgha.redact import scrub_text


class RedactingFormatter(logging.Formatter):
    """Masks anything that looks like a credential in a log line (password=..., user:pass@host...), as
    a last line of defence (pgha.redact)."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub_text(super().format(record))


def setup_logging(cfg: NodeConfig) -> None:
    handler: logging.Handler
    handler = logging.FileHandler(cfg.log.file) if cfg.log.file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(f"%(asctime)s {cfg.name} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.log.level)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
