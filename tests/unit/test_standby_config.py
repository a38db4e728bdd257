"""standby_cluster in the cluster config: every value checked before it reaches a file, one line per
bad value; and the promote-cluster / demote-cluster validators (pgha.intents)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pgha import intents
from pgha.core.model import ClusterConfig, ClusterView, Switchover
from pgha.core.standby import REMOTE, StandbyCluster, active
from pgha.dcs.codec import decode_config, encode_config
from tests.unit.core_builders import primary, replica, view

GOOD = [
    StandbyCluster(host="10.0.0.5"),
    StandbyCluster(host="db1.site-b:5433,db2.site-b:5433", primary_slot_name="site_b"),
    StandbyCluster(host="[::1]:5433,127.0.0.1"),
    StandbyCluster(restore_command="pgbackrest --stanza=main archive-get %f \"%p\""),
    StandbyCluster(host="h", recovery_min_apply_delay="5min"),
]

BAD = [
    (StandbyCluster(host="h; rm -rf /"), "standby_cluster.host: host"),
    (StandbyCluster(host="h1,,h2"), "empty entry"),
    (StandbyCluster(host="h:70000"), "port 70000"),
    (StandbyCluster(host="h", port=0), "standby_cluster.port"),
    (StandbyCluster(host="h", primary_slot_name="Bad-Slot"), "primary_slot_name"),
    (StandbyCluster(restore_command="cp %p x\nhost all all 0/0 trust"), "restore_command"),
    (StandbyCluster(host="h", recovery_min_apply_delay="5 years"), "recovery_min_apply_delay"),
    (StandbyCluster(primary_slot_name="s"), "give host"),
    (StandbyCluster(host=",".join(f"h{i}" for i in range(9))), "at most 8 hosts"),
]


@pytest.mark.parametrize("sc", GOOD, ids=[s.host or s.restore_command for s in GOOD])
def test_good_values_pass_and_round_trip(sc: StandbyCluster) -> None:
    assert sc.problem() is None
    cfg = ClusterConfig(standby_cluster=sc)
    assert decode_config(encode_config(cfg)) == cfg
    assert active(cfg.standby_cluster)


@pytest.mark.parametrize(("sc", "names"), BAD, ids=[b[1] for b in BAD])
def test_bad_values_give_one_line(sc: StandbyCluster, names: str) -> None:
    why = ClusterConfig(standby_cluster=sc).problem()
    assert why is not None and names in why and "\n" not in why


def test_hosts_with_their_ports() -> None:
    sc = StandbyCluster(host="a:5433, b,[::1]:7", port=6000)
    assert sc.hosts() == (("a", 5433), ("b", 6000), ("::1", 7))


def test_empty_or_absent_is_a_primary_cluster() -> None:
    assert not active(None) and not active(StandbyCluster())
    assert decode_config(b'{"standby_cluster": null}').standby_cluster is None
    assert decode_config(b'{"standby_cluster": {}}').problem() is None


def _cluster(sc: StandbyCluster | None = None, **kw: Any) -> ClusterView:
    v = view(primary("a"), replica("b", "a"), leader="a", **kw)
    return replace(v, config=replace(v.config, standby_cluster=sc))


def test_promote_cluster() -> None:
    new = intents.promote_cluster(_cluster(StandbyCluster(host="h")))
    assert isinstance(new, ClusterConfig) and new.standby_cluster is None
    refused = intents.promote_cluster(_cluster())
    assert isinstance(refused, intents.Refusal) and "not a standby cluster" in refused.message
    assert isinstance(intents.promote_cluster(None), intents.Refusal)
    busy = intents.promote_cluster(_cluster(StandbyCluster(host="h"), switchover=Switchover(id="x")))
    assert isinstance(busy, intents.Refusal) and busy.kind == intents.Kind.CONFLICT


def test_demote_cluster() -> None:
    src = StandbyCluster(host="b1:5432,b2:5432", primary_slot_name="site_a")
    new = intents.demote_cluster(_cluster(), src)
    assert isinstance(new, ClusterConfig) and new.standby_cluster == src
    for bad, words in [(StandbyCluster(), "give the cluster to follow"),
                       (StandbyCluster(host="x y"), "standby_cluster.host")]:
        r = intents.demote_cluster(_cluster(), bad)
        assert isinstance(r, intents.Refusal) and words in r.message
    again = intents.demote_cluster(_cluster(StandbyCluster(host="h")), src)
    assert isinstance(again, intents.Refusal) and "already a standby cluster" in again.message
    paused = _cluster()
    paused = replace(paused, config=replace(paused.config, pause=True))
    assert isinstance(intents.demote_cluster(paused, src), intents.Refusal)


def test_the_standby_leaders_postgresql_conf() -> None:
    """Every host of the other site in primary_conninfo, its slot, restore_command and the delay; no
    member's slot; the files say whom they follow (``REMOTE``) so the agent sees it."""
    from pgha.config import Credentials, NodeConfig, PostgresConfig
    from pgha.postgres import conf
    from pgha.postgres.common import Upstream
    from pgha.postgres.layout import Layout

    cfg = NodeConfig(cluster="c", name="b1", postgresql=PostgresConfig(
        data_dir="/srv/pg/data", port=5433, replication=Credentials("repl", "pw"), superuser=Credentials("pg", "x")))
    sc = StandbyCluster(host="a1:5432,[::1]:5433", primary_slot_name="site_b",
                        restore_command="pgbackrest --stanza=main archive-get %f '%p'", recovery_min_apply_delay="5min")
    text = conf.render_postgresql_conf(cfg, Layout.of(cfg), {}, Upstream(REMOTE, "a1", 5432, remote=sc), "")
    lines = text.splitlines()
    conninfo = next(ln for ln in lines if ln.startswith("primary_conninfo"))
    assert "host=''a1,::1''" in conninfo and "port=''5432,5433''" in conninfo and "target_session_attrs=any" in conninfo
    assert "primary_slot_name = 'site_b'" in lines
    assert "restore_command = 'pgbackrest --stanza=main archive-get %f ''%p'''" in lines
    assert "recovery_min_apply_delay = '5min'" in lines and "recovery_target_timeline = 'latest'" in lines
    assert conf.read_upstream(text) == (REMOTE, None)
    promoted = conf.without_upstream(text)
    assert "primary_conninfo" not in promoted and "recovery_min_apply_delay" not in promoted
    # Only restore_command: no primary_conninfo at all.
    only = StandbyCluster(restore_command="cp /arch/%f %p")
    text = conf.render_postgresql_conf(cfg, Layout.of(cfg), {}, Upstream(REMOTE, "", 0, remote=only), "")
    assert "primary_conninfo" not in text and "restore_command = 'cp /arch/%f %p'" in text
    # A bad value that got past every reader still never reaches the file.
    bad = StandbyCluster(host="a1 host=evil")
    with pytest.raises(ValueError, match=r"standby_cluster\.host"):
        conf.render_postgresql_conf(cfg, Layout.of(cfg), {}, Upstream(REMOTE, "a1", 5432, remote=bad), "")


def test_health_checks_of_a_standby_cluster() -> None:
    """Patroni 4's answers (its api.py do_GET): the standby leader answers /standby-leader, /leader and
    /read-only, not /primary nor /replica; its replicas answer as replicas."""
    import time

    from pgha.api import health, patroni
    from pgha.config import NodeConfig, PostgresConfig
    from tests.unit.test_api_patroni import CONFIG, REPLICA, snap

    sb = replace(CONFIG, standby_cluster=StandbyCluster(host="site-a"))
    checks = {p: c.check for c in health.HEALTH_CHECKS for p in c.paths}

    def ok(s: object) -> set[str]:
        paths = ("/primary", "/leader", "/standby-leader", "/replica", "/read-only", "/read-only-sync")
        return {p for p in paths if checks[p](s, {}, time.monotonic())}  # type: ignore[arg-type]

    leader = snap(replace(REPLICA, name="n1"), config=sb)
    assert ok(leader) == {"/leader", "/standby-leader", "/read-only", "/read-only-sync"}
    node = NodeConfig(cluster="c", name="n1", postgresql=PostgresConfig(data_dir="/srv/pg/data"))
    assert patroni.document(leader, node, 0.0)["role"] == "standby_leader"
    assert ok(snap(REPLICA, config=sb)) == {"/replica", "/read-only"}
    # Outside a standby cluster, a leader still in recovery (promoting) is no standby leader.
    assert ok(snap(replace(REPLICA, name="n1"))) == set()


def test_the_dashboard_names_what_a_standby_cluster_follows_never_its_restore_command() -> None:
    from pgha.api.dashboard import _standby_of
    from tests.unit.test_api_patroni import CONFIG, REPLICA, snap

    assert _standby_of(snap(REPLICA)) is None
    assert _standby_of(snap(REPLICA, config=replace(CONFIG, standby_cluster=StandbyCluster(host="a1,a2")))) == "a1,a2"
    secret = StandbyCluster(restore_command="PGPASSWORD=s3cret fetch %f %p")
    assert "s3cret" not in str(_standby_of(snap(REPLICA, config=replace(CONFIG, standby_cluster=secret))))
