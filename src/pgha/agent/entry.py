"""`pgha agent -c FILE` without the CLI: the agent process imports neither click nor the
operator commands (each import stays resident for as long as the agent runs).

``pgha.__main__`` comes here when the command line is exactly ``agent -c FILE`` (or
``--config FILE``, ``--config=FILE``); anything else (``--help``, a typo) goes through click,
whose ``agent`` command runs the same ``run_agent``.
"""

from __future__ import annotations

import logging
import sys

from pgha.config import ConfigError, NodeConfig, load
from pgha.preflight import exposed_secrets, run_all
from pgha.upgrade import bindir


def config_path_of(args: list[str]) -> str | None:
    """The FILE of ``agent -c FILE`` (the arguments after the program name), else None."""
    if len(args) == 3 and args[0] == "agent" and args[1] in ("-c", "--config"):
        return args[2]
    if len(args) == 2 and args[0] == "agent" and args[1].startswith("--config="):
        return args[1].split("=", 1)[1] or None
    return None


def load_checked(path: str) -> NodeConfig:
    """The node configuration, checked against this machine; one line and exit 1 if it is bad."""
    try:
        cfg = bindir.apply(load(path))
        run_all(cfg)
        warning = exposed_secrets(path, cfg)
        if warning is not None:
            print(f"pgha: warning: {warning}", file=sys.stderr, flush=True)
        return cfg
    except ConfigError as exc:
        print(f"pgha: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def run_agent(config_path: str) -> None:
    """Run the HA agent in the foreground until SIGTERM/SIGINT."""
    run_loaded(load_checked(config_path))


def run_loaded(cfg: NodeConfig) -> None:
    """Run the HA agent of an already checked configuration (``pgha agent``, ``pgha adopt``)."""
    from pgha.postgres import driver

    driver.choose(cfg)  # before the first import of psycopg (Agent's)
    from pgha.agent.agent import Agent, install_signal_handlers
    from pgha.api.server import ApiStartError
    from pgha.logging_setup import setup_logging

    setup_logging(cfg)
    a = Agent(cfg)
    install_signal_handlers(a)
    try:
        a.run()
    except (ConfigError, ApiStartError) as exc:
        logging.getLogger("pgha").error("%s", exc)
        sys.exit(1)
