"""docs/multi-host.md is what `pgha demo up --etcd-members 3` runs: every block marked as a step is
the text of pgha.demo.multihost.STEPS, every input block sets exactly the variables of its step, the
example node YAML parses, and every other shell block says why it is not tested."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from pgha.config import parse
from pgha.demo import multihost, netlab

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "multi-host.md"
BLOCK = re.compile(r"(?:<!-- (?P<tag>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


def blocks() -> list[tuple[str, str, str]]:
    """(tag, language, body) of every fenced block, in order."""
    return [(m["tag"] or "", m["lang"], m["body"]) for m in BLOCK.finditer(GUIDE.read_text())]


def assigned(body: str) -> set[str]:
    names: set[str] = set()
    for line in body.splitlines():
        words = shlex.split(line, posix=True) if "$(" not in line else line.split()
        names |= {w.split("=", 1)[0] for w in words if re.match(r"^[A-Z_][A-Z0-9_]*=", w)}
        if words[:1] == ["read"]:
            names.add(words[-1])
    return names


def test_every_step_block_is_the_text_the_demo_runs() -> None:
    steps = [(tag.split(": ", 1)[1], body) for tag, _, body in blocks() if tag.startswith("step: ")]
    assert {name for name, _ in steps} == set(multihost.STEPS)
    for name, body in steps:
        assert body == multihost.STEPS[name], f"docs/multi-host.md step {name} differs from pgha.demo.multihost"


def test_every_input_block_sets_exactly_what_its_step_reads() -> None:
    inputs = [(tag.split(": ", 1)[1], body) for tag, _, body in blocks() if tag.startswith("inputs: ")]
    assert {name for name, _ in inputs} == set(multihost.STEPS)
    earlier: set[str] = set()
    for name, body in inputs:
        # A variable set for an earlier step (PKI on the admin machine) is still set in that shell.
        missing = set(multihost.STEP_INPUTS[name]) - assigned(body) - earlier
        assert not missing, f"the inputs of step {name} do not set {missing}"
        earlier |= assigned(body)
        extra = assigned(body) - set(multihost.STEP_INPUTS[name])
        assert not extra, f"the inputs of step {name} set {extra}, which it does not read"


def test_every_other_shell_block_says_why_it_is_not_tested() -> None:
    for tag, lang, body in blocks():
        if lang == "sh":
            assert tag.startswith(("step: ", "inputs: ", "not tested: ")), f"untagged block: {body[:60]!r}"


def node_yaml(name: str, tmp_path: Path) -> dict[str, Any]:
    """The guide's YAML block ``checked: NAME``, its TLS files replaced by placeholders under ``tmp_path``."""
    [body] = [body for tag, _, body in blocks() if tag == f"checked: {name}"]
    data: dict[str, Any] = yaml.safe_load(body)
    etcd = data["dcs"]["etcd"]
    for key in ("cacert", "cert", "key"):
        path = tmp_path / Path(etcd[key]).name
        path.write_text("PEM")
        etcd[key] = str(path)
    return data


def test_the_example_node_yaml_parses_with_the_demos_dcs_keys(tmp_path: Path) -> None:
    data = node_yaml("node-yaml", tmp_path)
    etcd = data["dcs"]["etcd"]
    cfg = parse(data)
    assert cfg.dcs.etcd.username == "pgha" and len(cfg.dcs.etcd.endpoints) == 3
    from pgha.demo import DemoCluster

    demo = DemoCluster(tmp_path / "demo", etcd_members=3, netns=True)
    demo.lab = netlab.Lab(netlab.subnet_of("198.19.7.1"))
    demo.pgha_etcd_password = "x"
    assert set(demo._dcs_section()["etcd"]) == set(etcd)


def test_the_second_sites_node_yaml_parses_as_a_standby_cluster_like_the_labs(tmp_path: Path) -> None:
    """Section 10's site B YAML: a valid node config whose standby_cluster names a host list and the slot
    of step site-slot, the keys tests/support/sites.py gives its site B."""
    data = node_yaml("site-b-yaml", tmp_path)
    cfg = parse(data)
    sc = cfg.cluster_config.standby_cluster
    assert sc is not None and sc.active and len(sc.hosts()) == 3
    [slot_inputs] = [body for tag, _, body in blocks() if tag == "inputs: site-slot"]
    assert f"SLOT={sc.primary_slot_name}" in slot_inputs.split()
    from tests.support.sites import SITE_SLOT, standby_section

    assert sc.primary_slot_name == SITE_SLOT
    assert set(data["cluster_config"]["standby_cluster"]) <= set(standby_section("198.19.7.11:5432", 5432))
