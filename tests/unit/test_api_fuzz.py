"""Property test driven by the served OpenAPI document: for every operation, bodies and query strings
valid and invalid per its schema, plus junk, never get a 5xx or an undocumented status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgha.api.routes import openapi
from pgha.dcs.memory import MemoryKV
from pgha.dcs.store import ClusterStore
from tests.unit.test_api_helpers import API_PASSWORD, API_USER, SECRETS, Client, FakeHandle, make_handle, serving

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
TIMES = st.sampled_from(["2030-01-01T00:00:00+00:00", "2030-01-01T00:00:00Z", "2030-01-01T00:00:00",
                         "yesterday", "1893456000", "", "2001-01-01T00:00:00+00:00"])
SIZES = st.sampled_from(["0", "1", "16MB", "1GB", "512kB", "100B", "1TB", "16XB", "-1", "1.5MB", "", "MB"])


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values for the subset of JSON Schema the routing table emits; one time in four of any type."""
    valid = valid_for(schema)
    return st.one_of(valid, valid, valid, JSON)


def valid_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    options: list[st.SearchStrategy[Any]] = []
    if "anyOf" in schema or "oneOf" in schema:
        options += [from_schema(s) for s in schema.get("anyOf", schema.get("oneOf", []))]
    kind = schema.get("type")
    if "enum" in schema:
        options.append(st.sampled_from(schema["enum"]))
    if kind == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        required = set(schema.get("required", ()))
        fixed = st.fixed_dictionaries({k: from_schema(v) for k, v in props.items() if k in required},
                                      optional={k: from_schema(v) for k, v in props.items() if k not in required})
        options.append(fixed)
        if isinstance(extra, dict):
            options.append(st.dictionaries(st.text(max_size=12), from_schema(extra), max_size=3))
    elif kind == "string":
        # Member names and roles first: hypothesis draws early branches more often.
        options.append(st.sampled_from(["n1", "n2", "n3", "n4", "n5", "n9", "primary", "replica"]))
        options.append(TIMES if schema.get("format") == "date-time" else st.text(max_size=12))
    elif kind == "integer":
        options.append(st.integers(min_value=-(2**70), max_value=2**70))
    elif kind == "number":
        options.append(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-5, 100))
        options.append(st.sampled_from([1893456000, 2, 3, 10, 30, 0.5]))
    elif kind == "boolean":
        options.append(st.booleans())
    elif kind == "array":
        options.append(st.lists(from_schema(schema.get("items", {})), max_size=3))
    if schema.get("nullable"):
        options.append(st.none())
    return st.one_of(options) if options else JSON


def query_strategy(params: list[dict[str, Any]]) -> st.SearchStrategy[str]:
    pairs: list[st.SearchStrategy[tuple[str, str]]] = [st.tuples(st.text(max_size=6), st.text(max_size=6))]
    for p in params:
        prefix = p.get("x-pgha-prefix")
        if prefix:
            key = st.sampled_from(["zone", "nofailover", "nosync", "failover_priority", ""]).map(
                lambda k, pre=prefix: pre + k)
            pairs.append(st.tuples(key, st.sampled_from(["a", "b", "true", "false", "1", "0", ""])))
        else:
            pairs.append(st.tuples(st.just(p["name"]), SIZES | st.text(max_size=8)))
    return st.lists(st.one_of(pairs), max_size=4).map(
        lambda kv: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in kv))


# The document the server serves (test_api_server checks it equals the generated one).
DOC = openapi()
OPERATIONS = [(m.upper(), p, op) for p, item in DOC["paths"].items() for m, op in item.items()]


@pytest.fixture(scope="module")
def servers() -> Iterator[list[tuple[FakeHandle, Client]]]:
    leader, replica = make_handle("leader", auth=True), make_handle("replica")
    with serving(leader) as a, serving(replica) as b:
        assert a.get("/openapi.json").json() == DOC
        yield [(leader, a), (replica, b)]


@st.composite
def requests(draw: st.DrawFn, op: dict[str, Any]) -> tuple[str, bytes | None, bool, int]:
    query = draw(query_strategy(op.get("parameters", [])))
    raw: bytes | None = None
    body = op.get("requestBody")
    if body is not None:
        (schema,) = [c["schema"] for c in body["content"].values()]
        valid = from_schema(schema).map(lambda v: json.dumps(v).encode())
        raw = draw(st.one_of(valid, valid, valid, st.binary(max_size=40), st.just(b"")))
    elif draw(st.booleans()):
        raw = draw(st.binary(max_size=20))
    auth = draw(st.sampled_from([True, True, True, False]))
    return "?" + query if query else "", raw, auth, draw(st.integers(0, 1))


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_input_gets_a_5xx_or_an_undocumented_status(
        servers: list[tuple[FakeHandle, Client]], method: str, path: str, op: dict[str, Any],
        data: st.DataObject) -> None:
    query, raw, auth, which = data.draw(requests(op))
    handle, client = servers[which]
    handle.store = ClusterStore(MemoryKV(), "main")
    r = client.request(method, path + query, raw=raw, auth=(API_USER, API_PASSWORD) if auth else None)
    documented = {int(code) for code in op["responses"]}
    assert r.status != 500, (method, path, query, raw, r.data)
    assert r.status in documented, (method, path, query, raw, r.status, r.data)
    health = op["tags"] == ["health"]  # their 503 carries the node status, not an error
    if r.status >= 400 and method not in ("HEAD", "OPTIONS") and not health:
        message = r.json()["error"]
        assert isinstance(message, str) and message and "\n" not in message
    assert not any(s.encode() in r.data for s in SECRETS)
