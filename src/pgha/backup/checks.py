"""The node file's backup: section and bootstrap.method: pgbackrest, checked beyond types.

Called by ``pgha.config`` when either is present; raises ConfigError with one line.
"""

from __future__ import annotations

from pgha.backup.settings import PATH_RE
from pgha.backup.settings import problem as backup_problem
from pgha.config import ConfigError, NodeConfig


def check_node(cfg: NodeConfig) -> None:
    if cfg.backup is not None:
        _check_backup(cfg)
    elif "pgbackrest" in cfg.postgresql.create_replica_methods:
        raise ConfigError("postgresql.create_replica_methods: pgbackrest needs the backup: section (where the "
                          "repository is); add it or remove pgbackrest")
    _check_bootstrap(cfg)


def _check_backup(cfg: NodeConfig) -> None:
    """The ``backup:`` section, and the paths it writes into pgbackrest.conf and archive_command."""
    assert cfg.backup is not None
    found = backup_problem(cfg.backup, cfg.cluster)
    if found:
        raise ConfigError(found)
    for key, value in (("data_dir", cfg.postgresql.data_dir), ("socket_dir", cfg.postgresql.socket_dir)):
        if value and not PATH_RE.match(value):
            raise ConfigError(f"postgresql.{key}: {value!r} has characters pgBackRest's configuration cannot "
                              "take; with backup: use letters, digits and '_./+-'")


def _check_bootstrap(cfg: NodeConfig) -> None:
    """bootstrap.method: pgbackrest needs a source stanza other than the cluster's own, and a target."""
    boot = cfg.bootstrap
    if boot.method != "pgbackrest":
        if boot.pgbackrest is not None:
            raise ConfigError("bootstrap.pgbackrest: set bootstrap.method: pgbackrest too, or remove it")
        return
    if boot.pgbackrest is None or cfg.backup is None:
        raise ConfigError("bootstrap.method: pgbackrest needs bootstrap.pgbackrest.stanza (the stanza to restore "
                          "from) and the backup: section (where the repository is)")
    if boot.pgbackrest.stanza == cfg.backup.stanza_for(cfg.cluster):
        raise ConfigError(f"bootstrap.pgbackrest.stanza: {boot.pgbackrest.stanza!r} is this cluster's own stanza; "
                          "a restored cluster archives into a new stanza (set backup.stanza or another cluster name)")
    from pgha.backup.restore import RestoreError, parse_target

    src = boot.pgbackrest
    try:
        parse_target(src.target_time, src.target_lsn, src.target_name)
    except RestoreError as exc:
        raise ConfigError(f"bootstrap.pgbackrest: {exc}") from None
