"""Agent logging: one line per event, timestamps, never secrets."""

from __future__ import annotations

import logging
import re
import sys

from pgha.config import NodeConfig

_SECRET = re.compile(r"(password\s*[=:]\s*)('[^']*'|\"[^\"]*\"|\S+)", re.IGNORECASE)


class RedactingFormatter(logging.Formatter):
    """Masks anything that looks like password=... in a log line, as a last line of defence."""

    def format(self, record: logging.LogRecord) -> str:
        return _SECRET.sub(r"\1****", super().format(record))


def setup_logging(cfg: NodeConfig) -> None:
    handler: logging.Handler
    handler = logging.FileHandler(cfg.log.file) if cfg.log.file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(f"%(asctime)s {cfg.name} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.log.level)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
