"""The cluster-wide defaults are written once (core/model.py); every doc and comment naming them follows."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pgha.core import defaults
from pgha.core.model import PROFILES, ClusterConfig, profile_config
from pgha.generate_config import NodeFileRequest, Secrets, render

ROOT = Path(__file__).resolve().parents[2]
D, F = PROFILES["default"], PROFILES["fast"]


def test_the_configuration_reference_table_is_current() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert defaults.splice(text) == text, (
        "docs/configuration.md's defaults table is stale; regenerate it with: "
        "python -m pgha.core.defaults docs/configuration.md")


def test_the_table_shows_every_setting_with_its_default() -> None:
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| ([^|]+) \|", defaults.table(), re.M)}
    assert list(rows) == [f.name for f in dataclasses.fields(ClusterConfig)]
    config = ClusterConfig()
    for key in defaults.TIMINGS:
        assert rows[key].startswith(f"{getattr(config, key):g}"), (key, rows[key])
        assert f"`fast`: {F[key]:g}" in rows[key]
    assert rows["maximum_lag_on_failover"].strip() == str(config.maximum_lag_on_failover)
    assert f"every {config.renewal_period():.3g} s" in rows["renew_interval"]  # the automatic period


def test_the_default_profile_is_what_an_empty_config_gets() -> None:
    config = ClusterConfig()
    assert {key: getattr(config, key) for key in defaults.TIMINGS} == dict(D)
    assert config.problem() is None and all(profile_config(p).problem() is None for p in PROFILES)


def test_generate_config_names_the_real_defaults() -> None:
    req = NodeFileRequest(cluster="main", name="n1", etcd=("http://127.0.0.1:2379",), data_dir="/srv/pg",
                          pg_version=15, port=5432, listen="*", connect_host="10.0.0.1", api_listen="0.0.0.0:8008")
    text = render(req, Secrets.generate())
    comment = " ".join(line.removeprefix("# ") for line in text.splitlines() if line.startswith("#"))
    assert defaults.summary() in comment
    named = dict(re.findall(r"\b(ttl|loop_wait|retry_timeout|fence_margin) ([\d.]+)", defaults.summary()))
    assert {k: float(v) for k, v in named.items()} == {k: D[k] for k in named} and len(named) == 4


def test_other_docs_name_the_same_defaults() -> None:
    """Prose outside the generated table that names a default must name the one in PROFILES."""
    phrases = {
        "README.md": f"ttl {F['ttl']:g} s instead of {D['ttl']:g} s",
        "docs/operations.md": f"(`ttl: {D['ttl']:g}`, `loop_wait: {D['loop_wait']:g}`, "
                              f"`retry_timeout: {D['retry_timeout']:g}`",
        "docs/architecture.md": f"`default` — ttl {D['ttl']:g} s, loop_wait {D['loop_wait']:g} s, "
                                f"fence_margin {D['fence_margin']:g} s, a lease renewal every "
                                f"{ClusterConfig().renewal_period():.3g} s",
    }
    for path, phrase in phrases.items():
        assert phrase in " ".join((ROOT / path).read_text().split()), f"{path} does not say: {phrase}"
