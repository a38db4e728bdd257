"""Options every operator command shares: which DCS, which cluster, and how errors end.

A command takes ``-c FILE`` (a node configuration: cluster name, etcd
endpoints, prefix) or ``--dcs URL[,URL] --cluster NAME`` (``--prefix``
defaults to /pgha).  ``@with_cluster()`` adds those options and passes the
command a ``Session`` whose ``store`` is a ``ClusterStore`` over etcd.

Errors end the command with ONE line on stderr prefixed ``pgha: ``:
``Refused`` exits 1 (an invalid or refused request), ``Unreachable`` exits 3
(the DCS did not answer).  Usage errors stay click's (exit 2).

Tests replace ``KV_FACTORY`` to run the commands over an in-memory KV.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Concatenate, ParamSpec, TypeVar

import click

from pgha import intents
from pgha.config import ConfigError, NodeConfig, load
from pgha.core.model import ClusterView
from pgha.dcs.base import KV, DCSError
from pgha.dcs.store import ClusterStore

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_PREFIX = "/pgha"
DEFAULT_TIMEOUT = 2.0


def _etcd_kv(endpoints: tuple[str, ...], timeout: float) -> KV:
    from pgha.dcs.etcd import EtcdKV

    return EtcdKV(endpoints, timeout)


# Builds the KV for (endpoints, request timeout).  Tests override it (e.g. with a MemoryKV).
KV_FACTORY: Callable[[tuple[str, ...], float], KV] = _etcd_kv


class Refused(click.ClickException):
    """The request is invalid or refused: one line on stderr, exit 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"pgha: {self.format_message()}", err=True)


class Unreachable(Refused):
    """The DCS did not answer: exit 3."""

    exit_code = 3


@dataclass
class Session:
    """What a command runs against; the KV is opened on first use and closed at the end."""

    endpoints: tuple[str, ...]
    cluster: str
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT
    # The node configuration when the command was given -c FILE.
    node: NodeConfig | None = None
    # Where the endpoints came from, for the "unreachable" hint: "--dcs" or "-c FILE".
    source: str = "--dcs"
    _kv: KV | None = field(default=None, repr=False)
    _store: ClusterStore | None = field(default=None, repr=False)

    @property
    def kv(self) -> KV:
        if self._kv is None:
            self._kv = KV_FACTORY(self.endpoints, self.timeout)
        return self._kv

    @property
    def store(self) -> ClusterStore:
        if self._store is None:
            if not self.cluster:
                raise click.UsageError("name the cluster: --cluster NAME (or -c FILE)")
            self._store = ClusterStore(self.kv, self.cluster, self.prefix)
        return self._store

    def for_cluster(self, cluster: str) -> ClusterStore:
        """A store for another cluster name on the same DCS (``remove CLUSTER``)."""
        self.cluster = cluster
        self._store = None
        return self.store

    def read(self) -> ClusterView:
        return self.store.read()

    @property
    def url(self) -> str:
        return ",".join(self.endpoints)

    def unreachable(self, exc: BaseException) -> Unreachable:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        fix = "fix --dcs" if self.source == "--dcs" else f"fix etcd.endpoints in {self.source}"
        if detail.startswith("etcd unreachable at ") and "; start etcd" in detail:
            # EtcdKV already names each endpoint and why it failed: keep that, with our own hint.
            return Unreachable(f"{detail[:detail.rindex('; start etcd')]}; start etcd or {fix}")
        if detail.startswith("etcd "):
            return Unreachable(detail)
        return Unreachable(f"etcd unreachable at {self.url} ({detail}); start etcd or {fix}")

    def close(self) -> None:
        if self._kv is not None:
            with contextlib.suppress(DCSError):
                self._kv.close()
            self._kv = None
            self._store = None


def _split_endpoints(text: str) -> tuple[str, ...]:
    urls = tuple(u.strip().rstrip("/") for u in text.split(",") if u.strip())
    if not urls:
        raise click.BadParameter("give at least one URL, e.g. http://127.0.0.1:2379", param_hint="--dcs")
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise click.BadParameter(f"{u!r} must start with http:// or https://", param_hint="--dcs")
    return urls


def make_session(config_path: str | None, dcs: str | None, cluster: str | None, prefix: str | None,
                 required: bool = True) -> Session | None:
    """Resolve -c / --dcs / --cluster / --prefix into a Session (None when optional and absent)."""
    node: NodeConfig | None = None
    if config_path:
        try:
            node = load(config_path)
        except ConfigError as exc:
            raise Refused(str(exc)) from None
    if node is None and dcs is None:
        if cluster is not None:
            raise click.UsageError("--cluster needs --dcs URL (or use -c FILE)")
        if required:
            raise click.UsageError("say where the cluster is: -c FILE, or --dcs URL --cluster NAME")
        return None
    endpoints = _split_endpoints(dcs) if dcs else node.etcd.endpoints if node else ()
    return Session(
        endpoints=endpoints,
        cluster=cluster or (node.cluster if node else ""),
        prefix=prefix or (node.etcd.prefix if node else DEFAULT_PREFIX),
        timeout=node.etcd.request_timeout if node else DEFAULT_TIMEOUT,
        node=node,
        source="--dcs" if dcs else f"-c {config_path}",
    )


def dcs_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The -c / --dcs / --cluster / --prefix options, without any behaviour."""
    for opt in reversed([
        click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
                     help="Node YAML file (gives the cluster, the etcd endpoints and the prefix)."),
        click.option("--dcs", envvar="PGHA_DCS", metavar="URL[,URL]",
                     help="etcd endpoints, e.g. http://127.0.0.1:2379 (env PGHA_DCS)."),
        click.option("--cluster", envvar="PGHA_CLUSTER", metavar="NAME",
                     help="Cluster name (env PGHA_CLUSTER)."),
        click.option("--prefix", metavar="PATH", help=f"Key prefix in etcd (default {DEFAULT_PREFIX})."),
    ]):
        fn = opt(fn)
    return fn


def _wrap(fn: Callable[..., None], required: bool) -> Callable[..., None]:
    @dcs_options
    @functools.wraps(fn)
    def wrapper(config_path: str | None, dcs: str | None, cluster: str | None, prefix: str | None,
                *args: Any, **kwargs: Any) -> None:
        # The same options given before the command (pgha -c FILE list) fill in what is missing.
        ctx = click.get_current_context(silent=True)
        outer = (ctx.find_root().obj if ctx is not None else None) or {}
        session = make_session(config_path or outer.get("config_path"), dcs or outer.get("dcs"),
                               cluster or outer.get("cluster"), prefix or outer.get("prefix"), required)
        try:
            fn(session, *args, **kwargs)
        except DCSError as exc:
            assert session is not None
            raise session.unreachable(exc) from None
        finally:
            if session is not None:
                session.close()

    return wrapper


def with_cluster(fn: Callable[Concatenate[Session, P], None]) -> Callable[..., None]:
    """Add the DCS options; call the command with a Session first; turn DCS errors into exit 3."""
    return _wrap(fn, required=True)


def with_optional_cluster(fn: Callable[Concatenate[Session | None, P], None]) -> Callable[..., None]:
    """Like ``with_cluster``, but the command gets None when neither -c nor --dcs was given."""
    return _wrap(fn, required=False)


# --- helpers the commands share ----------------------------------------------------------

# Replaced by tests: a fake sleep can play the agents' part while a command waits.
SLEEP: Callable[[float], None] = time.sleep
# Seconds `--wait` waits for the agents to carry out a request.
WAIT_TIMEOUT = 60.0


def confirm(prompt: str, force: bool) -> None:
    """Ask "PROMPT [y/N]" unless ``force``; anything but yes refuses with exit 1."""
    if force:
        return
    try:
        yes = click.confirm(prompt, default=False)
    except click.Abort:
        yes = False
    if not yes:
        raise Refused("aborted; nothing was changed")


def wait_for(check: Callable[[], str | None], timeout: float, what: str, interval: float = 0.5) -> None:
    """Call ``check`` until it returns None (done); it returns a progress line otherwise.

    Each new progress line is printed once; after ``timeout`` seconds refuse with ``what``.
    """
    deadline = time.monotonic() + timeout
    last: str | None = None
    while True:
        progress = check()
        if progress is None:
            return
        if progress != last:
            click.echo(f"  {progress}")
            last = progress
        if time.monotonic() >= deadline:
            raise Refused(f"{what} not done after {timeout:g} s ({progress}); it may still complete")
        SLEEP(interval)


class ScheduleTime(click.ParamType):  # type: ignore[type-arg]
    """``--scheduled``: an ISO 8601 time (local time when no offset is given) -> epoch seconds."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            when = datetime.datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a time; use ISO 8601, e.g. 2030-01-31T02:00 (local) "
                      "or 2030-01-31T02:00+01:00", param, ctx)
        if when.tzinfo is None:
            when = when.astimezone()
        return when.timestamp()


def requester() -> intents.Requester:
    """The CLI asks as an outsider: it sees what the members published, now."""
    return intents.Requester(wall_now=time.time(), mono_now=time.monotonic())


def valid(result: T | intents.Refusal) -> T:
    """What a validator of ``pgha.intents`` returned, or its refusal as ``pgha: <message>`` (exit 1)."""
    if isinstance(result, intents.Refusal):
        raise Refused(result.message)
    return result
