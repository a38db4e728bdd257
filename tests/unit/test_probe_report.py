"""Probe arithmetic on synthetic data: gaps, means, missing writes, errors, secrets. No server."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import psycopg
import pytest

from pgha.probe import (
    ProbeError,
    ProbeReport,
    ProbeStats,
    dsn_secrets,
    error_line,
    mask_dsn,
    probe_conninfo,
    safe_dsn,
    table_identifier,
    top_errors,
)

WALL = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def stats_with(acks: Sequence[tuple[int, float]], failures: Sequence[str] = ()) -> ProbeStats:
    s = ProbeStats("run1", start=100.0, wall_start=WALL)
    s.connected = True
    for seq, t in acks:
        s.ack(seq, t)
    for msg in failures:
        s.fail(msg)
    return s


def test_longest_gap_between_two_writes_and_when_it_began() -> None:
    s = stats_with([(1, 100.01), (2, 100.02), (5, 100.52), (6, 100.53)])
    r = s.report(end=100.54, present=[1, 2, 5, 6])
    assert r.max_gap_ms == pytest.approx(500.0)
    assert r.max_gap_at == "2023-11-14T22:13:20.020Z"
    assert r.acknowledged == 4
    assert r.mean_interval_ms == pytest.approx(520.0 / 3, abs=1e-3)
    assert r.duration_s == pytest.approx(0.54)
    assert r.missing == 0 and r.missing_seqs == ()


def test_outage_at_the_start_or_end_of_the_run_is_a_gap() -> None:
    r = stats_with([(3, 101.0), (4, 101.01)]).report(end=101.02, present=[3, 4])
    assert r.max_gap_ms == pytest.approx(1000.0)
    assert r.max_gap_at == "2023-11-14T22:13:20.000Z"
    r = stats_with([(1, 100.01), (2, 100.02)]).report(end=102.02, present=[1, 2])
    assert r.max_gap_ms == pytest.approx(2000.0)
    assert r.max_gap_at == "2023-11-14T22:13:20.020Z"


def test_no_write_at_all() -> None:
    s = ProbeStats("run1", start=100.0, wall_start=WALL)
    s.fail("refused")
    r = s.report(end=103.0, present=())
    assert (r.acknowledged, r.failed, r.connected) == (0, 1, False)
    assert r.max_gap_ms == pytest.approx(3000.0)
    assert r.mean_interval_ms is None
    assert r.missing == 0


def test_missing_is_acknowledged_minus_present() -> None:
    s = stats_with([(1, 100.1), (2, 100.2), (4, 100.4), (5, 100.5)])
    r = s.report(end=100.6, present=[1, 3, 5, 99])  # 3 failed-but-committed, 99 unrelated: not missing
    assert r.missing == 2 and r.missing_seqs == (2, 4)
    assert s.report(end=100.6, present=None).missing is None


def test_errors_are_counted_and_ranked() -> None:
    s = stats_with([], ["refused"] * 3 + ["reset"] + ["timeout"] * 2)
    r = s.report(end=101.0, present=())
    assert r.failed == 6
    assert r.errors == (("refused", 3), ("timeout", 2), ("reset", 1))


def test_top_errors_folds_the_tail() -> None:
    errors = {f"e{i}": 10 - i for i in range(8)}
    top = top_errors(errors, limit=3)
    assert top == (("e0", 10), ("e1", 9), ("e2", 8), ("(5 other distinct errors)", 7 + 6 + 5 + 4 + 3))
    assert top_errors({"b": 1, "a": 1}) == (("a", 1), ("b", 1))


def test_report_json_has_the_fixed_keys_and_is_frozen() -> None:
    r = stats_with([(1, 100.1)], ["x"]).report(end=100.2, present=[1])
    d = json.loads(r.to_json())
    keys = ("acknowledged", "failed", "max_gap_ms", "max_gap_at", "missing", "duration_s", "errors", "run_id")
    assert set(keys) <= set(d)
    assert d["errors"] == [{"message": "x", "count": 1}]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.acknowledged = 5  # type: ignore[misc]
    assert isinstance(r, ProbeReport)
    assert "acknowledged writes  1" in r.to_text()


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("host=h password=s3cret user=u", "host=h password=**** user=u"),
        ("host=h password = 's3 cret' user=u", "host=h password = **** user=u"),
        ("postgresql://u:s3cret@h1:5432,h2:5433/db", "postgresql://u:****@h1:5432,h2:5433/db"),
        ("postgres://u:s3cret@h/db?sslmode=require", "postgres://u:****@h/db?sslmode=require"),
        ("postgresql://u@h/db?password=s3cret&sslmode=disable", "postgresql://u@h/db?password=****&sslmode=disable"),
        ("postgresql://h:5432/db", "postgresql://h:5432/db"),
        ("host=h user=u", "host=h user=u"),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_malformed_dsn_error_never_shows_the_password() -> None:
    with pytest.raises(ProbeError) as info:
        probe_conninfo("host=h password s3cret")
    assert "s3cret" not in str(info.value)
    assert "invalid DSN" in str(info.value)
    assert "s3cret" in dsn_secrets("host=h password s3cret")
    assert safe_dsn("host=h password s3cret") == "host=h password ****"


def test_error_line_is_one_masked_short_line() -> None:
    exc = psycopg.OperationalError("connection failed: secret hunter2 here\n\tIs the server running?")
    assert error_line(exc, ["hunter2"]) == "connection failed: secret **** here"
    assert len(error_line(ValueError("x" * 1000))) == 200
    assert error_line(ValueError()) == "ValueError"


def test_probe_conninfo_adds_client_timeouts_but_keeps_the_dsns_own() -> None:
    info = psycopg.conninfo.conninfo_to_dict(probe_conninfo("host=h connect_timeout=7"))
    assert info["connect_timeout"] == "7"
    assert info["keepalives"] == "1"


def test_table_names() -> None:
    assert table_identifier("pgha_probe") is not None
    assert table_identifier("ops.probe") is not None
    for bad in ("", "a.b.c", "x; drop table y", "1abc"):
        with pytest.raises(ProbeError):
            table_identifier(bad)
