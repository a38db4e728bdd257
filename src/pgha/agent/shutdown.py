"""How an agent leaves: fence before releasing, on SIGTERM/SIGINT (``Agent.run`` ends with it)."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from pgha.core import memory as M
from pgha.dcs.base import DCSError

if TYPE_CHECKING:
    from pgha.agent.agent import Agent

log = logging.getLogger("pgha.agent")


def leave(agent: Agent) -> None:
    """Fence before releasing: stop PostgreSQL (not in maintenance mode), drop the VIP, then the leader
    key and lease."""
    log.info("shutting down")
    leading = agent.view is not None and agent.view.leader is not None and \
        agent.view.leader.name == agent.config.name
    pg = agent.ports.pg
    agent.remember([M.StoppedOnPurpose(agent.ports.clock.monotonic())])
    if agent.view is not None and agent.view.config.pause:
        # Maintenance mode: pgha hands PostgreSQL back to the operator (a rollback, a move to
        # another manager) and leaves it running, as it takes an adopted one over running.
        log.warning("maintenance mode: leaving PostgreSQL running")
    else:
        try:
            pg.stop("fast", 60)
        except Exception as exc:
            log.error("could not stop PostgreSQL cleanly (%s); stopping immediately", exc)
            with contextlib.suppress(Exception):
                pg.stop("immediate", 10)
    with contextlib.suppress(Exception):
        agent.remember(agent.set_vip(False))
    if agent.ports.watchdog is not None:
        agent.ports.watchdog.stop()
    if agent.ports.vip is not None:
        with contextlib.suppress(Exception):
            agent.ports.vip.close()
    if leading:
        with contextlib.suppress(DCSError):
            agent.store.release_leader(agent.config.name)
    agent.lease.stop(revoke=True)
    role = agent.memory.announced_role
    if role is not None and agent.config.callbacks.on_stop:
        # Run now rather than queued behind a slow hook; after the key is released, so the hook
        # (bounded by callbacks.timeout) does not delay the next leader.
        agent.ports.callbacks.run("on_stop", role)
    agent.ports.poller.close()
    if agent.ports.exits is not None:
        agent.ports.exits.close()
    if agent.api is not None:
        agent.api.stop()
    log.info("stopped")
