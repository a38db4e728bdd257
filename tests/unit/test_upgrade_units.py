"""Issue 21, `pgha upgrade` without PostgreSQL: the DCS record's validation, the hold, the request's
refusals, and the pre-flight's extension and initdb decisions."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pgha import intents
from pgha.config import parse
from pgha.core import upgrade_steps
from pgha.upgrade import checks
from pgha.upgrade.record import Report, Upgrade, decode_report, decode_upgrade, dump, holding, with_phase
from tests.unit.core_builders import config, primary, replica, view

REQ = intents.Requester(wall_now=1000.0, mono_now=50.0)
BIN = "/usr/lib/postgresql/18/bin"


def _raw(**kw: object) -> bytes:
    return dump(Upgrade(id="u1", to_bin_dir=BIN, leader="a", phase="syncing", **kw))  # type: ignore[arg-type]


def test_record_values_that_reach_a_command_line_are_checked() -> None:
    assert decode_upgrade(_raw(kept_name="data.15", primary_host="10.0.0.1", primary_data_dir="/var/lib/d"))
    for bad in ({"kept_name": "../etc"}, {"kept_name": "a/b"}, {"primary_host": "-oProxyCommand=x"},
                {"primary_host": "a b"}, {"primary_data_dir": "relative/data"}, {"primary_data_dir": "/a/../b"}):
        assert decode_upgrade(_raw(**bad)) is None, bad
    relative = json.loads(_raw())
    relative["to_bin_dir"] = "bin"
    assert decode_upgrade(json.dumps(relative).encode()) is None
    assert decode_upgrade(b"not json") is None and decode_upgrade(b'{"id": "u1"}') is None


@pytest.mark.parametrize("bad", [
    {"primary_host": "h'x"}, {"primary_host": "10.0.0.1\nlisten_addresses='*'"}, {"primary_host": "h x=y"},
    {"leader": "a\nb"}, {"leader": "-a"}, {"leader": "a'b"}, {"members": ["a", "b c"]}, {"members": ["a", "x\ny"]},
    {"id": "u1\nFAKE LOG LINE"}, {"id": ""}, {"id": "x" * 65}, {"message": "ok\rFAKE"}, {"inject": "a b"},
])
def test_a_hostile_record_in_the_dcs_is_ignored(bad: dict[str, object]) -> None:
    """Hosts and member names by ``core.names`` like every other DCS value; ids and messages one line."""
    record = json.loads(_raw(primary_host="10.0.0.1", members=("a", "b")))
    assert decode_upgrade(json.dumps(record).encode()) is not None
    record.update(bad)
    assert decode_upgrade(json.dumps(record).encode()) is None, bad


def test_a_hostile_report_is_ignored_and_messages_are_kept_on_one_line() -> None:
    good = {"id": "u1", "phase": "stopped", "message": "fine", "lsn": "0/3000028", "at": 1.0}
    assert decode_report(json.dumps(good).encode()) is not None
    for bad in ({"phase": "whatever"}, {"id": "u1\nX"}, {"message": "a\nb"}, {"lsn": "0/1\nX"},
                {"extra": {"k": "v\n"}}, {"extra": []}):
        assert decode_report(json.dumps({**good, **bad}).encode()) is None, bad
    up = with_phase(Upgrade(id="u1", to_bin_dir=BIN, leader="a"), "failed", "pg_upgrade failed:\nline 1\n\tline 2\x00")
    assert up.message == "pg_upgrade failed: line 1 line 2"
    assert decode_upgrade(dump(up)) == up


def test_the_hold_lasts_until_each_member_is_released() -> None:
    up = Upgrade(id="u1", to_bin_dir=BIN, leader="a", phase="replicas", members=("a", "b", "c"))
    released = {"a": Report("u1", "released"), "b": Report("u0", "released"), "c": Report("u1", "synced")}
    assert holding(up, released) == {"b", "c"}
    assert holding(Upgrade(id="u1", to_bin_dir=BIN, leader="a", phase="preflight", members=("a",)), {}) == set()
    assert holding(Upgrade(id="u1", to_bin_dir=BIN, leader="a", phase="rolled-back", members=("a",)), {}) == set()


def _cluster(**kw: object) -> object:
    return view(primary("a"), replica("b", "a"), leader="a", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "want"), [
    ({"to_bin_dir": "usr/lib/postgresql/18/bin"}, "--to-bin-dir must be an absolute, plain directory path"),
    ({"to_bin_dir": "/usr/lib/../bin"}, "--to-bin-dir must be an absolute, plain directory path"),
    ({"view": "paused"}, "the cluster is paused"),
    ({"view": "no leader"}, "the cluster has no leader running as primary"),
    ({"pending": "active"}, "an upgrade to /usr/lib/postgresql/18/bin is already under way (phase stopping"),
    ({"inject": "bogus"}, "unknown failure to inject 'bogus'"),
])
def test_request_refusals(kw: dict[str, str], want: str) -> None:
    v = {"paused": _cluster(cfg=config(pause=True)), "no leader": view(primary("a"), replica("b", "a"))}.get(
        kw.get("view", ""), _cluster())
    pending = Upgrade(id="u0", to_bin_dir=BIN, leader="a", phase="stopping") if kw.get("pending") else None
    r = intents.upgrade(v, REQ, id="u1", to_bin_dir=kw.get("to_bin_dir", BIN), pending=pending,  # type: ignore[arg-type]
                        inject=kw.get("inject", ""))
    assert isinstance(r, intents.Refusal) and r.message.startswith(want), r


def test_request_over_a_finished_upgrade() -> None:
    done = Upgrade(id="u0", to_bin_dir=BIN, leader="a", phase="done")
    r = intents.upgrade(_cluster(), REQ, id="u1", to_bin_dir=BIN, pending=done)  # type: ignore[arg-type]
    assert isinstance(r, Upgrade) and (r.leader, r.phase, r.inject) == ("a", "preflight", "")


def test_extension_versions(tmp_path: Path) -> None:
    (tmp_path / "hstore.control").write_text("default_version = '1.8'\n")
    (tmp_path / "hstore--1.4.sql").write_text("")
    (tmp_path / "hstore--1.7--1.8.sql").write_text("")
    assert checks.extension_problem(tmp_path, "hstore", "1.4") is None  # an install script
    assert checks.extension_problem(tmp_path, "hstore", "1.7") is None  # an update path from it
    assert checks.extension_problem(tmp_path, "hstore", "1.8") is None  # the default version
    assert "has no install or update script" in (checks.extension_problem(tmp_path, "hstore", "1.2") or "")
    assert "has no pgcrypto.control" in (checks.extension_problem(tmp_path, "pgcrypto", "1.3") or "")


def test_initdb_options_follow_the_old_clusters_checksums() -> None:
    node = parse({"cluster": "c", "name": "n", "postgresql": {"data_dir": "/d"}, "api": {"auth": "none"}})
    assert "--data-checksums" in node.postgresql.initdb
    assert checks.initdb_options(node, True, 18)[-1] == "--data-checksums"
    off = checks.initdb_options(node, False, 18)
    assert "--data-checksums" not in off and off[-1] == "--no-data-checksums"
    assert "--no-data-checksums" not in checks.initdb_options(node, False, 16)
    assert checks.checksums_on({"Data page checksum version": "1"}) and not checks.checksums_on({})


def test_operations_doc_names_the_upgrades_limits() -> None:
    from pgha.upgrade import worker

    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert f"within {checks.MAX_LAG_BYTES // 2**20} MiB" in doc
    assert f"(up to {worker.BOUNCER_WAIT:g} s)" in doc


# (phase, lead, mine, primary_lsn, done) -> the rows that hold, in order
PART_CASES = [
    (("preflight", True, "", False, False), ["upgrade-preflight", "upgrade-judge-preflight"]),
    (("preflight", True, "preflight-ok", False, False), ["upgrade-judge-preflight"]),
    (("preflight", False, "", False, False), ["upgrade-preflight"]),
    (("preflight", False, "preflight-ok", False, False), []),
    (("preflight", True, "", False, True), []),  # done already for this phase
    (("stopping", True, "", False, False), ["upgrade-stop-all"]),
    (("stopping", False, "", False, False), ["upgrade-pause-replica"]),
    (("stopping", False, "paused", False, False), []),  # waits for the primary's final checkpoint
    (("stopping", False, "paused", True, False), ["upgrade-stop-replica"]),
    (("stopping", False, "stopped", True, False), []),
    (("stopping", False, "failed", True, False), []),
    (("upgrading", True, "", True, False), []),  # the leader's own thread is inside stop-all
    (("upgrading", False, "stopped", True, False), []),
    (("syncing", False, "stopped", True, False), ["upgrade-resync-replica"]),
    (("syncing", False, "synced", True, False), []),
    (("replicas", True, "released", True, False), ["upgrade-finish"]),
    (("replicas", False, "synced", True, False), ["upgrade-release-replica"]),
    (("replicas", False, "sync-skipped", True, False), ["upgrade-release-replica"]),
    (("replicas", False, "released", True, False), []),
    (("rolling-back", False, "synced", True, False), ["upgrade-restore-replica"]),
    (("rolling-back", False, "restored", True, False), []),
    (("rolling-back", True, "", True, False), []),
]


@pytest.mark.parametrize(("facts", "want"), PART_CASES)
def test_which_part_of_the_upgrade_a_member_does(facts: tuple[str, bool, str, bool, bool], want: list[str]) -> None:
    assert [r.id for r in upgrade_steps.parts(upgrade_steps.UpgradeFacts(*facts))] == want


def test_every_upgrade_row_is_tested_and_carried_out() -> None:
    from pgha.upgrade.worker import UpgradeWorker

    assert {r.id for r in upgrade_steps.UPGRADE_RULES} == {i for _, ids in PART_CASES for i in ids}
    worker = UpgradeWorker(SimpleNamespace(config=SimpleNamespace(name="a")))  # type: ignore[arg-type]
    assert set(worker._parts) == {r.part for r in upgrade_steps.UPGRADE_RULES}
