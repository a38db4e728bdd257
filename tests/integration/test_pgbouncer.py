"""PgBouncer 1.18 in front of two real PostgreSQL 15 servers, driven by the routing adapter."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
import pytest

from pgha.config import PgBouncerConfig
from pgha.routing.pgbouncer import PgBouncer, PgBouncerError, read_target, rewrite_databases
from tests.support.pgbouncer import ADMIN_PASSWORD, APP_PASSWORD, Bouncer, PgServer, start_bouncer

pytestmark = pytest.mark.integration

Pair = tuple[PgServer, PgServer]


def server_port(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT inet_server_port()").fetchone()
    assert row is not None
    return int(row[0])


def fresh_port(b: Bouncer) -> int:
    """The server port a new client connection through ``b`` reaches."""
    with b.connect() as conn:
        return server_port(conn)


def servers_at(b: Bouncer) -> set[str]:
    return {str(r["port"]) for r in b.adapter.admin("SHOW SERVERS").dicts()}


def test_repoint_moves_new_queries(bouncer: Bouncer, pg_pair: Pair) -> None:
    one, two = pg_pair
    client = bouncer.connect()
    assert server_port(client) == one.port
    assert bouncer.adapter.current_target() == ("127.0.0.1", one.port)

    bouncer.adapter.repoint("127.0.0.1", two.port)

    assert bouncer.adapter.current_target() == ("127.0.0.1", two.port)
    assert server_port(client) == two.port  # same client, next transaction
    assert fresh_port(bouncer) == two.port
    assert servers_at(bouncer) == {str(two.port)}
    bouncer.adapter.repoint("127.0.0.1", two.port)  # idempotent
    assert server_port(client) == two.port
    client.close()


def test_switchover_with_pause_loses_no_client_transaction(bouncer: Bouncer, pg_pair: Pair) -> None:
    one, two = pg_pair
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def client_loop() -> None:
        try:
            with bouncer.connect() as conn:
                while not stop.is_set():
                    with conn.transaction():
                        conn.execute("SELECT pg_sleep(0.002)")
                        seen.append(server_port(conn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client_loop) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        while len(seen) < 20:
            time.sleep(0.01)
        bouncer.adapter.pause(timeout=5)
        assert bouncer.adapter.paused
        assert servers_at(bouncer) == set()  # PAUSE closed every server connection
        bouncer.adapter.repoint("127.0.0.1", two.port)
        bouncer.adapter.resume()
        assert not bouncer.adapter.paused
        n = len(seen)
        while len(seen) < n + 20 and not errors:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    assert seen[0] == one.port and seen[-1] == two.port
    switched = seen.index(two.port)
    assert set(seen[switched:]) == {two.port}


def test_pause_timeout_is_clear_and_resume_recovers(bouncer: Bouncer, pg_pair: Pair) -> None:
    one, _ = pg_pair
    busy = bouncer.connect(autocommit=False)
    busy.execute("SELECT 1")  # an open transaction holds its server connection
    with pytest.raises(PgBouncerError, match=r"did not answer PAUSE within 0.5s"):
        bouncer.adapter.pause(timeout=0.5)
    bouncer.adapter.resume()
    busy.commit()
    assert server_port(busy) == one.port
    busy.commit()
    assert fresh_port(bouncer) == one.port
    bouncer.adapter.resume()  # not paused: fine
    busy.close()


def test_failover_repoint_cuts_sessions_still_on_the_old_primary(bouncer: Bouncer, pg_pair: Pair) -> None:
    one, two = pg_pair
    stuck = bouncer.connect(autocommit=False)
    stuck.execute("SELECT 1")  # transaction left open on the old primary
    assert servers_at(bouncer) == {str(one.port)}

    bouncer.adapter.repoint("127.0.0.1", two.port, grace=0.5)

    assert str(one.port) not in servers_at(bouncer)
    with pytest.raises(psycopg.OperationalError):
        stuck.execute("SELECT 1")
    stuck.close()
    assert fresh_port(bouncer) == two.port


def test_repoint_rewrites_only_databases_and_keeps_the_rest(bouncer: Bouncer, pg_pair: Pair) -> None:
    _, two = pg_pair
    before = bouncer.ini.read_text()
    bouncer.ini.write_text(before.replace("[pgbouncer]", "; keep this comment\n[pgbouncer]")
                           + "\n; trailing comment\n")
    original = bouncer.ini.read_text().splitlines()
    mode = bouncer.ini.stat().st_mode

    bouncer.adapter.repoint("127.0.0.1", two.port)

    after = bouncer.ini.read_text().splitlines()
    changed = [(a, b) for a, b in zip(original, after, strict=True) if a != b]
    assert changed == [(f"* = host=127.0.0.1 port={pg_pair[0].port}", f"* = host=127.0.0.1 port={two.port}")]
    assert bouncer.ini.stat().st_mode == mode


def test_one_entry_per_database(pg_pair: Pair) -> None:
    one, two = pg_pair
    b = start_bouncer(one, databases=("postgres",))
    try:
        assert b.adapter.current_target() == ("127.0.0.1", one.port)
        b.adapter.repoint("127.0.0.1", two.port)
        assert f"postgres = host=127.0.0.1 port={two.port} dbname=postgres" in b.ini.read_text()
        assert fresh_port(b) == two.port
    finally:
        b.close()


def test_errors_are_one_line_and_never_show_secrets(
        bouncer: Bouncer, pg_pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    cfg = bouncer.adapter.cfg
    wrong = PgBouncer(PgBouncerConfig(config=cfg.config, admin_port=cfg.admin_port,
                                      admin_user=cfg.admin_user, admin_password="not-the-password"))
    with caplog.at_level(logging.DEBUG), pytest.raises(PgBouncerError) as err:
        wrong.pause()
    message = str(err.value)
    assert "admin console" in message and "\n" not in message and "not-the-password" not in message
    with caplog.at_level(logging.DEBUG):
        bouncer.adapter.pause()
        bouncer.adapter.repoint("127.0.0.1", pg_pair[1].port)
        bouncer.adapter.resume()
    assert "PgBouncer points at" in caplog.text
    for secret in (ADMIN_PASSWORD, APP_PASSWORD, "not-the-password"):
        assert secret not in caplog.text
    assert "admin_password" not in repr(cfg) or ADMIN_PASSWORD not in repr(cfg)


def test_rewrite_databases_text() -> None:
    text = ("; header\n[databases]\n; a comment\napp = host=old port=1 dbname=app pool_size=5\n"
            "other = host=elsewhere port=2\n\n[pgbouncer]\nlisten_port = 6432\n")
    out = rewrite_databases(text, ["app", "reports"], "new", 5432)
    assert out == ("; header\n[databases]\n; a comment\napp = host=new port=5432 dbname=app pool_size=5\n"
                   "other = host=elsewhere port=2\nreports = host=new port=5432 dbname=reports\n\n"
                   "[pgbouncer]\nlisten_port = 6432\n")
    assert rewrite_databases(out, ["app", "reports"], "new", 5432) == out
    assert read_target(out, ["app"]) == ("new", 5432)
    assert rewrite_databases("[pgbouncer]\nlisten_port = 1\n", ["*"], "h", 5) == (
        "[databases]\n* = host=h port=5\n\n[pgbouncer]\nlisten_port = 1\n")


def test_auto_databases_with_hostile_names_are_never_written(bouncer: Bouncer, pg_pair: Pair) -> None:
    """PgBouncer registers an auto-database for any name a client sends, even with a wrong password; a
    repoint never writes such a name into pgbouncer.ini (PgBouncer 1.18 drops idle auto-databases at
    RELOAD; the filter itself is tested in tests/unit/test_names.py)."""
    two = pg_pair[1]
    hostile = ["x y", "appdb=host=203.0.113.9", 'q"uote', "a\tb"]
    with bouncer.connect():
        pass  # registers the plain auto-database "postgres"
    for name in hostile:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host="127.0.0.1", port=bouncer.port, user="nobody", password="wrong", dbname=name,
                            connect_timeout=5).close()
    registered = {r["name"] for r in bouncer.adapter.admin("SHOW DATABASES").dicts()}
    assert {"postgres", *hostile} <= registered
    bouncer.adapter.repoint("127.0.0.1", two.port)
    text = bouncer.ini.read_text()
    assert "203.0.113.9" not in text and "x y" not in text and "uote" not in text and "a\tb" not in text
    assert fresh_port(bouncer) == two.port
