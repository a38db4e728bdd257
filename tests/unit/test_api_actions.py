"""Operator actions: auth, validation, refusals with their messages, conflicts, intents in the store."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from pgha.core.model import ClusterConfig, Switchover
from tests.unit.test_api_helpers import (
    API_PASSWORD,
    API_USER,
    SECRETS,
    Client,
    FakeHandle,
    make_handle,
    serving,
    with_view,
)

ACTIONS = [("POST", "/switchover"), ("DELETE", "/switchover"), ("POST", "/failover"), ("POST", "/restart"),
           ("DELETE", "/restart"), ("POST", "/reload"), ("POST", "/reinitialize"), ("PATCH", "/config"),
           ("POST", "/pause"), ("POST", "/resume"), ("POST", "/failsafe")]


@pytest.fixture
def leader() -> Iterator[tuple[FakeHandle, Client]]:
    h = make_handle("leader", auth=True)
    with serving(h) as c:
        yield h, c


@pytest.fixture
def replica() -> Iterator[tuple[FakeHandle, Client]]:
    h = make_handle("replica", auth=True)
    with serving(h) as c:
        yield h, c


# --- auth ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), ACTIONS)
def test_actions_need_credentials(leader: tuple[FakeHandle, Client], method: str, path: str) -> None:
    h, c = leader
    for auth in (None, (API_USER, "wrong"), ("root", API_PASSWORD), ("", ""), (API_USER, API_PASSWORD + "x")):
        r = c.request(method, path, {}, auth=auth)
        assert r.status == 401, (auth, r.data)
        assert r.headers["www-authenticate"].startswith("Basic realm=")
        assert "error" in r.json()
    for header in ("Bearer abc", "Basic !!!notbase64", "Basic", "basic " + "x" * 5000):
        r = c.request(method, path, {}, headers={"Authorization": header}, auth=False)
        assert r.status == 401, header
    assert h.store.read().switchover is None and h.wakes == 0


def test_right_credentials_are_accepted_and_reads_need_none(leader: tuple[FakeHandle, Client]) -> None:
    h, c = leader
    assert c.post("/reload").status == 202
    assert h.wakes == 1
    for path in ("/status", "/cluster", "/config", "/primary", "/metrics"):
        assert c.get(path, auth=None).status == 200


def test_with_auth_none_actions_are_open() -> None:
    h = make_handle("leader")
    assert h.config.api.auth == "none"
    with serving(h) as c:
        assert c.post("/reload", auth=None).status == 202


def test_a_config_built_without_api_auth_opens_nothing() -> None:
    """pgha.config refuses a file without api.auth; one built in code without it lets nobody in."""
    h = make_handle("leader")
    h.config = dataclasses.replace(h.config, api=dataclasses.replace(h.config.api, auth=None))
    with serving(h) as c:
        assert c.post("/reload", auth=None).status == 401
        assert c.post("/reload", auth=("", "")).status == 401
    assert h.store.read().intents == {}


def test_the_api_refuses_until_the_agent_read_the_cluster(replica: tuple[FakeHandle, Client]) -> None:
    h, c = replica
    h.snap = dataclasses.replace(h.snap, view=None)
    for path, body in (("/switchover", {}), ("/failover", {"candidate": "n2"}), ("/restart", {}),
                       ("/reload", {}), ("/reinitialize", {})):
        r = c.post(path, body)
        assert r.status == 503 and r.error == "the agent has not read the cluster state yet; retry in a moment"
    assert h.store.read().intents == {} and h.store.read().switchover is None


# --- bodies ------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "message"), [
    (b"{", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object, not an array"),
    (b'"x"', "must be a JSON object, not a string"),
    (b"\xff\xfe", "not valid JSON"),
    (b'{"candidate": NaN}', "numbers must be finite"),
    (b'{"candidate": 1e999}', "out of range"),
    (b'{"candidate": 5}', "candidate: expected a string, got 5"),
    (b'{"candidate": ""}', "candidate: must not be empty"),
    (b'{"colour": "red"}', "unknown field 'colour'; this endpoint accepts: leader, candidate, scheduled_at"),
    (b'{"scheduled_at": true}', "scheduled_at: expected an ISO-8601 time"),
    (b'{"scheduled_at": "tomorrow"}', "scheduled_at: 'tomorrow' is not an ISO-8601 time"),
    (b'{"scheduled_at": "2030-01-01T10:00:00"}', "has no timezone"),
    (b'{"scheduled_at": 1e300}', "out of range"),
    (b'{"a":' * 40 + b"1" + b"}" * 40, "nested"),
])
def test_bad_switchover_bodies_are_400(leader: tuple[FakeHandle, Client], raw: bytes, message: str) -> None:
    h, c = leader
    r = c.request("POST", "/switchover", raw=raw)
    assert r.status == 400, r.data
    assert message in r.error and "\n" not in r.error
    assert h.store.read().switchover is None


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/failover", {}, "candidate: required field is missing"),
    ("/failover", {"candidate": None}, "candidate: required field is missing"),
    ("/restart", {"role": "master"}, "role: must be one of primary, replica"),
    ("/restart", {"pending_restart": "yes"}, "pending_restart: expected true or false"),
    ("/reinitialize", {"force": 1}, "force: expected true or false"),
    ("/failsafe", {"leader": ["n1"]}, "leader: expected a string"),
    ("/reload", {"now": True}, "unknown field 'now'; this endpoint accepts: no fields"),
])
def test_bad_bodies_are_400(replica: tuple[FakeHandle, Client], path: str, body: object, message: str) -> None:
    r = replica[1].post(path, body)
    assert r.status == 400 and message in r.error, r.data


def test_large_and_chunked_bodies_are_refused(leader: tuple[FakeHandle, Client]) -> None:
    _, c = leader
    r = c.request("POST", "/switchover", raw=b" " * (1024 * 1024 + 1))
    assert r.status == 413
    r = c.request("POST", "/switchover", raw=b"{}", headers={"Transfer-Encoding": "chunked"})
    assert r.status in (400, 411)
    assert c.get("/status").status == 200


# --- switchover and failover --------------------------------------------------------------
@pytest.mark.parametrize(("body", "message"), [
    ({"leader": "n2"}, "n2 is not the leader; the leader is n1"),
    ({"scheduled_at": "2001-01-01T10:00:00+00:00"}, "the scheduled time is in the past; give a future time, or "
                                                   "none for now"),
    ({"scheduled_at": 5}, "the scheduled time is in the past; give a future time, or none for now"),
    ({"candidate": "n9"}, "candidate n9 is not a member of the cluster"),
    ({"candidate": "n1"}, "candidate n1 is already the leader"),
    ({"candidate": "n3"}, "candidate n3 lags 52428800 bytes, more than maximum_lag_on_failover"),
    ({"candidate": "n4"}, "candidate n4 is tagged nofailover"),
    ({"candidate": "n5"}, "candidate n5 is tagged nofailover"),
])
def test_switchover_refusals(replica: tuple[FakeHandle, Client], body: dict[str, str], message: str) -> None:
    h, c = replica
    r = c.post("/switchover", body)
    assert r.status == 412, r.data
    assert r.error == message
    assert h.store.read().switchover is None and h.wakes == 0


def test_switchover_without_candidate_needs_a_healthy_replica(leader: tuple[FakeHandle, Client]) -> None:
    h, c = leader
    assert h.snap.view is not None
    with_view(h, members={k: v for k, v in h.snap.view.members.items() if k != "n2"})
    r = c.post("/switchover", {})
    assert r.status == 412
    assert r.error.startswith("no member can take over: candidate n3 lags")


def test_switchover_without_leader_points_to_failover(leader: tuple[FakeHandle, Client]) -> None:
    h, c = leader
    with_view(h, leader=None)
    r = c.post("/switchover", {"candidate": "n2"})
    assert r.status == 412 and "POST /failover" in r.error


def test_switchover_accepted_then_409_then_cancelled(replica: tuple[FakeHandle, Client]) -> None:
    h, c = replica
    r = c.post("/switchover", {"leader": "n1", "candidate": "n2"})
    assert r.status == 200, r.data
    body = r.json()
    sw = h.store.read().switchover
    assert sw == Switchover(id=body["id"], kind="switchover", leader="n1", candidate="n2")
    assert h.wakes == 1
    r = c.post("/switchover", {})
    assert r.status == 409 and "already pending" in r.error
    r = c.post("/failover", {"candidate": "n2"})
    assert r.status == 409
    assert c.request("DELETE", "/switchover").status == 200
    assert h.store.read().switchover is None
    assert c.request("DELETE", "/switchover").status == 404


def test_pending_switchover_in_the_view_is_409(replica: tuple[FakeHandle, Client]) -> None:
    h, c = replica
    with_view(h, switchover=Switchover(id="abc"))
    r = c.post("/switchover", {"candidate": "n2"})
    assert r.status == 409 and "id abc)" in r.error


@pytest.mark.parametrize("when", ["iso", "z", "epoch", "epoch-string"])
def test_scheduled_switchover_is_202(leader: tuple[FakeHandle, Client], when: str) -> None:
    h, c = leader
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    value: object = {"iso": at.isoformat(), "z": at.isoformat().replace("+00:00", "Z"),
                     "epoch": at.timestamp(), "epoch-string": str(int(at.timestamp()))}[when]
    r = c.post("/switchover", {"scheduled_at": value})
    assert r.status == 202, r.data
    sw = h.store.read().switchover
    assert sw is not None and sw.scheduled_at == at.timestamp() and sw.candidate is None and sw.leader == "n1"


def test_failover(leader: tuple[FakeHandle, Client]) -> None:
    h, c = leader
    for cand, message in (("n1", "already the leader"), ("n5", "tagged nofailover"),
                          ("n9", "not a member"), ("n4", "tagged nofailover"),
                          ("n3", "lags 52428800 bytes")):
        r = c.post("/failover", {"candidate": cand})
        assert r.status == 412 and message in r.error, cand
    r = c.post("/failover", {"candidate": "n2"})
    assert r.status == 200
    sw = h.store.read().switchover
    assert sw is not None and sw.kind == "failover" and sw.candidate == "n2" and sw.leader == "n1"


def test_failover_without_a_leader(replica: tuple[FakeHandle, Client]) -> None:
    h, c = replica
    with_view(h, leader=None)
    assert c.post("/failover", {"candidate": "n2"}).status == 200
    sw = h.store.read().switchover
    assert sw is not None and sw.leader is None


# --- member intents -----------------------------------------------------------------------
def test_restart_intent_and_cancel(replica: tuple[FakeHandle, Client]) -> None:
    h, c = replica
    at = time.time() + 3600
    r = c.post("/restart", {"pending_restart": True, "role": "replica", "schedule": at})
    assert r.status == 202, r.data
    intent = h.store.read().intents["n2"]
    assert intent.action == "restart" and intent.only_if_pending and intent.role == "replica"
    assert intent.scheduled_at == at and h.wakes == 1
    assert c.post("/restart").status == 409
    assert c.post("/reload").status == 409
    r = c.request("DELETE", "/restart")
    assert r.status == 200 and "n2" not in h.store.read().intents
    assert c.request("DELETE", "/restart").status == 404


def test_reload_intent(replica: tuple[FakeHandle, Client]) -> None:
    h, c = replica
    assert c.post("/reload", {}).status == 202
    assert h.store.read().intents["n2"].action == "reload"


def test_reinitialize(replica: tuple[FakeHandle, Client], leader: tuple[FakeHandle, Client]) -> None:
    r = leader[1].post("/reinitialize", {"force": True})
    assert r.status == 409 and "n1 is the leader" in r.error
    assert "n1" not in leader[0].store.read().intents
    h, c = replica
    assert c.post("/reload").status == 202
    assert c.post("/reinitialize", {}).status == 409
    assert h.snap.view is not None
    with_view(h, intents=h.store.read().intents)
    r = c.post("/reinitialize", {"force": True, "from_leader": True})
    assert r.status == 202, r.data
    intent = h.store.read().intents["n2"]
    assert intent.action == "reinitialize" and intent.from_leader


def test_reinitialize_needs_a_leader(replica: tuple[FakeHandle, Client]) -> None:
    h, c = replica
    with_view(h, leader=None)
    assert c.post("/reinitialize").status == 412


# --- cluster configuration -------------------------------------------------------------------
def test_config_merge_patch(leader: tuple[FakeHandle, Client]) -> None:
    h, c = leader
    r = c.request("PATCH", "/config", {"ttl": 30, "parameters": {"work_mem": "8MB", "max_connections": 200}},
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.status == 200, r.data
    config, _ = h.store.get_config()
    assert config.ttl == 30.0 and dict(config.parameters) == {"work_mem": "8MB", "max_connections": 200}
    r = c.request("PATCH", "/config", {"parameters": {"work_mem": None}, "ttl": None})
    assert r.status == 200
    config, _ = h.store.get_config()
    assert config.ttl == ClusterConfig().ttl and dict(config.parameters) == {"max_connections": 200}
    assert c.get("/config").json()["parameters"] == {"max_connections": 200}
    assert h.wakes == 2


@pytest.mark.parametrize(("patch", "message"), [
    ({"ttl": 1}, "ttl: 1.0 is too short; use at least 2 seconds"),
    ({"ttl": "long"}, "ttl: expected a number, got 'long'"),
    ({"pause": "yes"}, "pause: expected true or false"),
    ({"synchronous_mode": "always"}, "synchronous_mode: must be"),
    ({"loop_wait": 16}, "loop_wait: 16.0 must be positive and at most half of ttl"),
    ({"renew_interval": 20},
     "renew_interval: 20.0 must be 0 (automatic) or 0.05 to (ttl - fence_margin)/2 (4) seconds"),
    ({"colour": "red"}, "colour: unknown key"),
    ({"parameters": ["a"]}, "parameters: expected a mapping"),
    ({"parameters": {"x": [1]}}, "parameters.x: expected"),
    ({"maximum_lag_on_failover": 10**5000}, "not valid JSON"),
    ({"parameters": {"work_mem\nport": "1"}}, "parameters: key 'work_mem\\nport' is not allowed"),
    ({"parameters": {"a=b": "1"}}, "parameters: parameter name 'a=b' is not allowed"),
    ({"parameters": {"archive_command": "x\ny"}}, "parameters: parameter archive_command's value holds a control"),
])
def test_config_patch_validation(leader: tuple[FakeHandle, Client], patch: dict[str, object],
                                 message: str) -> None:
    h, c = leader
    if patch.get("maximum_lag_on_failover"):
        r = c.request("PATCH", "/config", raw=b'{"maximum_lag_on_failover": ' + b"9" * 5000 + b"}")
    else:
        r = c.request("PATCH", "/config", patch)
    assert r.status == 400, r.data
    assert message in r.error, r.error
    assert h.store.get_config() == (ClusterConfig(), 0)


def test_config_answers_mask_secret_looking_values(leader: tuple[FakeHandle, Client]) -> None:
    """/config answers anyone: a credential inside a parameter's value is masked, the rest kept."""
    h, c = leader
    command = "PGPASSWORD=Sekret-1 pgbackrest --repo1-s3-key-secret=Sekret-2 archive-push %p"
    assert c.request("PATCH", "/config", {"parameters": {"archive_command": command}}).status == 200
    shown = c.get("/config").json()["parameters"]["archive_command"]
    assert "Sekret" not in shown and shown.startswith("PGPASSWORD=******** pgbackrest") and "%p" in shown
    config, _ = h.store.get_config()
    assert config.parameters["archive_command"] == command  # stored as given


def test_config_patch_conflict_is_409(leader: tuple[FakeHandle, Client], monkeypatch: pytest.MonkeyPatch) -> None:
    h, c = leader
    real = h.store.get_config

    def stale() -> tuple[ClusterConfig, int]:
        config, revision = real()
        h.store.set_config(ClusterConfig(ttl=20), None)  # somebody else writes in between
        return config, revision

    monkeypatch.setattr(h.store, "get_config", stale)
    r = c.request("PATCH", "/config", {"ttl": 25})
    assert r.status == 409 and "changed concurrently" in r.error


def test_pause_and_resume(leader: tuple[FakeHandle, Client]) -> None:
    h, c = leader
    r = c.post("/pause")
    assert r.status == 200 and r.json()["pause"] is True
    assert h.store.get_config()[0].pause is True
    assert c.post("/pause").status == 200
    assert c.post("/resume").json()["pause"] is False
    assert h.store.get_config()[0].pause is False


def test_failsafe(replica: tuple[FakeHandle, Client]) -> None:
    h, c = replica
    assert c.post("/failsafe", {"leader": "n1"}).status == 200
    r = c.post("/failsafe", {"leader": "n3"})
    assert r.status == 409 and "not confirming n3" in r.error
    assert h.confirms == ["n1", "n3"]


# --- routing -------------------------------------------------------------------------------
def test_unknown_path_and_wrong_method(leader: tuple[FakeHandle, Client]) -> None:
    _, c = leader
    r = c.get("/nope")
    assert r.status == 404 and "no such endpoint" in r.error
    r = c.request("PUT", "/switchover", {})
    assert r.status == 405 and r.headers["allow"] == "DELETE, OPTIONS, POST"
    r = c.request("BREW", "/primary")
    assert r.status == 405
    r = c.get("/switchover")
    assert r.status == 405
    assert c.request("OPTIONS", "/switchover").status == 204


def test_no_secret_in_any_response(leader: tuple[FakeHandle, Client]) -> None:
    _, c = leader
    seen = []
    for method, path in ACTIONS:
        for auth in (None, True):
            seen.append(c.request(method, path, {"leader": "n1", "candidate": "n2"}, auth=auth).data)
    seen.append(c.request("PATCH", "/config", {"parameters": {"password_encryption": "scram-sha-256"}}).data)
    text = b"".join(seen).decode()
    assert not any(s in text for s in SECRETS)
