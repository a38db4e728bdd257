"""Options every operator command shares: which DCS, which cluster, and how errors end.

A command takes ``-c FILE`` (a node configuration: cluster name, its ``dcs:``
section) or ``--dcs URL[,URL] --cluster NAME`` (``--prefix`` defaults to
/pgha; ``zk://host:port,…`` names ZooKeeper (``zks://`` over TLS), ``http(s)://…``
etcd; the TLS files and user of either come from ``--dcs-cacert/-cert/-key/-user`` and the password
from the environment only, ``PGHA_DCS_PASSWORD``, never a flag that ``ps``
shows).  ``@with_cluster()`` adds those options and passes the command a
``Session`` whose ``store`` is a ``ClusterStore`` over that DCS.

Errors end the command with ONE line on stderr prefixed ``pgha: ``:
``Refused`` exits 1 (an invalid or refused request), ``Unreachable`` exits 3
(the DCS did not answer).  Usage errors stay click's (exit 2).

Tests replace ``KV_FACTORY`` to run the commands over an in-memory KV.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import IO, Any, Concatenate, ParamSpec, TypeVar

import click

from pgha import intents
from pgha.config import ConfigError, DcsConfig, NodeConfig, check_dcs, load
from pgha.core.model import ClusterView
from pgha.dcs.base import KV, DCSError
from pgha.dcs.factory import dcs_url, open_kv, parse_dcs_url
from pgha.dcs.store import ClusterStore

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_PREFIX = "/pgha"
DEFAULT_TIMEOUT = 2.0


# Builds the KV for a DcsConfig.  Tests override it (e.g. with a MemoryKV).
KV_FACTORY: Callable[[DcsConfig], KV] = open_kv


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

    dcs: DcsConfig
    cluster: str
    # The node configuration when the command was given -c FILE.
    node: NodeConfig | None = None
    # Where the endpoints came from, for the "unreachable" hint: "--dcs" or "-c FILE".
    source: str = "--dcs"
    _kv: KV | None = field(default=None, repr=False)
    _store: ClusterStore | None = field(default=None, repr=False)

    @property
    def kv(self) -> KV:
        if self._kv is None:
            self._kv = KV_FACTORY(self.dcs)
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
    def prefix(self) -> str:
        return self.dcs.prefix

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.dcs.zookeeper.hosts if self.dcs.type == "zookeeper" else self.dcs.etcd.endpoints

    @property
    def url(self) -> str:
        return dcs_url(self.dcs)

    def unreachable(self, exc: BaseException) -> Unreachable:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        name = "ZooKeeper" if self.dcs.type == "zookeeper" else "etcd"
        start = f"; start {name}"
        setting = "dcs.zookeeper.hosts" if self.dcs.type == "zookeeper" else "dcs.etcd.endpoints"
        fix = "fix --dcs" if self.source == "--dcs" else f"fix {setting} in {self.source}"
        if detail.startswith(f"{name} unreachable at ") and start in detail:
            # The backend already names each endpoint and why it failed: keep that, with our own hint.
            return Unreachable(f"{detail[:detail.rindex(start)]}{start} or {fix}")
        if detail.startswith(f"{name} "):
            return Unreachable(detail)
        return Unreachable(f"{name} unreachable at {self.url} ({detail}){start} or {fix}")

    def close(self) -> None:
        if self._kv is not None:
            with contextlib.suppress(DCSError):
                self._kv.close()
            self._kv = None
            self._store = None


@dataclass(frozen=True)
class EtcdFlags:
    """--dcs-cacert/--dcs-cert/--dcs-key/--dcs-user (and PGHA_DCS_PASSWORD): the DCS's TLS and auth without -c FILE."""

    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None

    def apply(self, dcs: DcsConfig) -> DcsConfig:
        password = os.environ.get("PGHA_DCS_PASSWORD", "")
        if not (self.cacert or self.cert or self.key or self.user or password):
            return dcs
        if dcs.type == "zookeeper":
            zk = dcs.zookeeper
            dcs = replace(dcs, zookeeper=replace(
                zk, cacert=self.cacert or zk.cacert, cert=self.cert or zk.cert, key=self.key or zk.key,
                tls=zk.tls or bool(self.cacert or self.cert), username=self.user or zk.username,
                password=password or zk.password))
        else:
            etcd = dcs.etcd
            dcs = replace(dcs, etcd=replace(
                etcd, cacert=self.cacert or etcd.cacert, cert=self.cert or etcd.cert, key=self.key or etcd.key,
                username=self.user or etcd.username, password=password or etcd.password))
        try:
            check_dcs(dcs)
        except ConfigError as exc:
            flag = {"cacert": "--dcs-cacert", "cert": "--dcs-cert", "key": "--dcs-key", "username": "--dcs-user",
                    "password": "PGHA_DCS_PASSWORD"}
            text = str(exc)
            for setting, name in flag.items():
                text = text.replace(f"dcs.etcd.{setting}", name).replace(f"dcs.zookeeper.{setting}", name)
            raise click.UsageError(text) from None
        return dcs


def make_session(config_path: str | None, dcs: str | None, cluster: str | None, prefix: str | None,
                 required: bool = True, flags: EtcdFlags | None = None) -> Session | None:
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
    settings = node.dcs if node else DcsConfig(prefix=DEFAULT_PREFIX, request_timeout=DEFAULT_TIMEOUT)
    if dcs:
        try:
            settings = parse_dcs_url(dcs, settings)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--dcs") from None
    if prefix:
        settings = replace(settings, prefix=prefix)
    if flags is not None:
        settings = flags.apply(settings)
    return Session(
        dcs=settings,
        cluster=cluster or (node.cluster if node else ""),
        node=node,
        source="--dcs" if dcs else f"-c {config_path}",
    )


def dcs_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The -c / --dcs / --cluster / --prefix options, without any behaviour."""
    for opt in reversed([
        click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
                     help="Node YAML file (gives the cluster, the etcd endpoints and the prefix)."),
        click.option("--dcs", envvar="PGHA_DCS", metavar="URL[,URL]",
                     help="etcd endpoints (http(s)://host:port,…) or ZooKeeper (zk://host:port,…; zks:// with TLS) "
                     "(env PGHA_DCS)."),
        click.option("--cluster", envvar="PGHA_CLUSTER", metavar="NAME",
                     help="Cluster name (env PGHA_CLUSTER)."),
        click.option("--prefix", metavar="PATH", help=f"Key prefix in the DCS (default {DEFAULT_PREFIX})."),
        click.option("--dcs-cacert", envvar="PGHA_DCS_CACERT", metavar="FILE",
                     help="CA the DCS's TLS certificates are verified against (env PGHA_DCS_CACERT)."),
        click.option("--dcs-cert", envvar="PGHA_DCS_CERT", metavar="FILE",
                     help="DCS client certificate (env PGHA_DCS_CERT)."),
        click.option("--dcs-key", envvar="PGHA_DCS_KEY", metavar="FILE", help="Its key (env PGHA_DCS_KEY)."),
        click.option("--dcs-user", envvar="PGHA_DCS_USER", metavar="NAME",
                     help="etcd or ZooKeeper user (env PGHA_DCS_USER); the password comes from env PGHA_DCS_PASSWORD."),
    ]):
        fn = opt(fn)
    return fn


def _wrap(fn: Callable[..., None], required: bool) -> Callable[..., None]:
    @dcs_options
    @functools.wraps(fn)
    def wrapper(config_path: str | None, dcs: str | None, cluster: str | None, prefix: str | None,
                dcs_cacert: str | None, dcs_cert: str | None, dcs_key: str | None, dcs_user: str | None,
                *args: Any, **kwargs: Any) -> None:
        # The same options given before the command (pgha -c FILE list) fill in what is missing.
        ctx = click.get_current_context(silent=True)
        outer = (ctx.find_root().obj if ctx is not None else None) or {}
        flags = EtcdFlags(dcs_cacert or outer.get("dcs_cacert"), dcs_cert or outer.get("dcs_cert"),
                          dcs_key or outer.get("dcs_key"), dcs_user or outer.get("dcs_user"))
        session = make_session(config_path or outer.get("config_path"), dcs or outer.get("dcs"),
                               cluster or outer.get("cluster"), prefix or outer.get("prefix"), required, flags)
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
