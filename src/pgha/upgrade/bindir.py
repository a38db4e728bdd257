"""The bin_dir a major-version upgrade left: ``<data_dir's parent>/pgha.bin_dir``.

After ``pgha upgrade`` each member's agent writes the new bin_dir there (one line), and uses it from
then on.  It overrides ``postgresql.bin_dir`` while the data directory is of the file's major and the
node file's bin_dir is not: an agent restarted before the node file was updated keeps running the
new server.  Once ``postgresql.bin_dir`` names the new major's programs (the node file updated, as
docs/operations.md asks), the file no longer matters.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from pgha.config import NodeConfig
from pgha.postgres import versions

log = logging.getLogger("pgha.upgrade")

FILE = "pgha.bin_dir"


def state_file(config: NodeConfig) -> Path:
    return Path(config.postgresql.data_dir).parent / FILE


def with_bin_dir(config: NodeConfig, bin_dir: str) -> NodeConfig:
    return dataclasses.replace(config, postgresql=dataclasses.replace(config.postgresql, bin_dir=bin_dir))


def apply(config: NodeConfig) -> NodeConfig:
    """``config`` with the upgrade's bin_dir when it applies (see the module's docstring)."""
    try:
        recorded = state_file(config).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return config
    if not recorded.startswith("/") or recorded == config.postgresql.bin_dir:
        return config
    data = versions.data_dir_major(Path(config.postgresql.data_dir))
    if data and versions.bin_dir_major(recorded) == data and versions.bin_dir_major(config.postgresql.bin_dir) != data:
        log.warning("postgresql.bin_dir %s is not the upgraded data directory's major; using %s from %s "
                    "(update the node file)", config.postgresql.bin_dir, recorded, state_file(config))
        return with_bin_dir(config, recorded)
    return config


def record(config: NodeConfig, bin_dir: str) -> None:
    """Write the new bin_dir for restarts (atomically)."""
    path = state_file(config)
    tmp = path.with_name(FILE + ".tmp")
    tmp.write_text(bin_dir + "\n")
    tmp.replace(path)
