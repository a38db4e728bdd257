"""Config fuzz: `pgha validate -c -` on hundreds of broken node files ends in exit 0 or one clear line.

The node files start from what `pgha generate-config` writes and from a demo node file (with
PgBouncer).  Each key is deleted, given a wrong type, or given odd strings (NUL, newlines, shell
and SQL metacharacters, 5,000 characters); malformed YAML, YAML tags and alias bombs are fed too.
Every variant must end in exit 0 or exit 1 with one line ``pgha: ...``: no traceback, and none
of the file's passwords in the output.  Most variants run in-process (click's CliRunner); a few
go through the real command.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pgha.cli.main import _register, cli
from pgha.config import Credentials
from pgha.demo.cluster import DemoCluster
from pgha.generate_config import NodeFileRequest, Secrets, render

ODD_STRINGS = [
    "",
    "a\x00b",
    "a\nb = 1",
    "a\rb",
    "x\u2028y",
    "$(touch /tmp/pwned)`id`;|&>",
    "'; DROP TABLE t; --",
    '"quoted" = \'x\'',
    "host=evil port=1",
    "*",
    "../../etc/passwd",
    "x" * 5000,
]
WRONG_TYPES: list[Any] = [0, -1, 70000, 2.5, True, None, [1, "a"], {"k": "v"}]
DELETE = object()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _generated(tmp: Path) -> tuple[str, list[str]]:
    sec = Secrets(Credentials("postgres", "SuperSecret-gen-1"), Credentials("replicator", "ReplSecret-gen-2"),
                  Credentials("pgha", "ApiSecret-gen-3"))
    req = NodeFileRequest(cluster="main", name="node1", etcd=("http://127.0.0.1:2379",),
                          data_dir=str(tmp / "gen" / "data"), pg_version=15, port=_free_port(), listen="127.0.0.1",
                          connect_host="127.0.0.1", api_listen=f"127.0.0.1:{_free_port()}",
                          parameters={"shared_buffers": "128MB", "archive_command": "PGPASSWORD=ArchSecret-4 x %p"})
    return render(req, sec), ["SuperSecret-gen-1", "ReplSecret-gen-2", "ApiSecret-gen-3", "ArchSecret-4"]


def _demo(tmp: Path) -> tuple[str, list[str]]:
    demo = DemoCluster(tmp / "demo", port_base=_free_port(), pgbouncer=True, api_tls=False, say=lambda s: None)
    demo.bouncer_admin_password = "BouncerSecret-demo-5"
    cfg = demo._node_config(1, "SuperSecret-demo-6", "ReplSecret-demo-7")
    cfg["api"]["listen"] = f"127.0.0.1:{_free_port()}"
    cfg["postgresql"]["port"] = _free_port()
    text = yaml.safe_dump(cfg, sort_keys=False)
    return text, ["BouncerSecret-demo-5", "SuperSecret-demo-6", "ReplSecret-demo-7", demo.api_password]


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))


def _variant(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _variants(text: str) -> Iterator[tuple[str, str]]:
    data = yaml.safe_load(text)
    yield "as written", text
    for path in _paths(data):
        name = ".".join(path)
        for i, value in enumerate([DELETE, *WRONG_TYPES, *ODD_STRINGS]):
            yield f"{name}#{i}", yaml.safe_dump(_variant(data, path, value), sort_keys=False)


HOSTILE_YAML = {
    "malformed": "cluster: [main\nname: {",
    "tab indent": "cluster: main\n\tname: x\n",
    "python object": "cluster: !!python/object/apply:os.system ['touch /tmp/pwned']\nname: n1\n",
    "python name": "cluster: !!python/name:os.system\n",
    "unknown tag": "cluster: !secret main\n",
    "binary": "cluster: !!binary aGVsbG8=\nname: n1\n",
    "set": "cluster: !!set {a, b}\n",
    "timestamp": "cluster: 2024-01-01 00:00:00\n",
    "billion laughs": ("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
                       + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
                                 for p, c in zip("abcdefgh", "bcdefghi", strict=True))
                       + "postgresql: {initdb: *i, parameters: *i, data_dir: /x}\ncluster: *i\n"),
    "recursive alias": "cluster: &c [*c]\n",
    "deep nesting": "cluster: " + "[" * 5000 + "]" * 5000 + "\n",
    "not a mapping": "- just\n- a list\n",
    "empty": "",
    "NUL byte": "cluster: main\x00\n",
    "huge key": "x" * 5000 + ": 1\n",
    "non-string key": "1: 2\n? [a]\n: b\n",
}


def _check(exit_code: int, stdout: str, stderr: str, secrets: list[str], case: str) -> None:
    out = stdout + stderr
    assert "Traceback" not in out, case
    for secret in secrets:
        assert secret not in out, f"{case}: a password in the output: {out[:300]!r}"
    if exit_code == 0:
        assert stdout.count("\n") == 1 and ": OK" in stdout, case
        return
    assert exit_code == 1, f"{case}: exit {exit_code}: {out[:300]!r}"
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgha: ") and not stdout, f"{case}: {out[:400]!r}"
    assert len(lines[0]) < 600, f"{case}: a line of {len(lines[0])} characters"


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, list[str]]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    return {"generated": _generated(tmp), "demo": _demo(tmp)}


def test_every_variant_of_a_node_file_gets_exit_0_or_one_line(bases: dict[str, tuple[str, list[str]]]) -> None:
    _register()
    runner = CliRunner()
    count = 0
    for base, (text, secrets) in bases.items():
        cases = [*_variants(text), *HOSTILE_YAML.items()]
        for case, variant in cases:
            result = runner.invoke(cli, ["validate", "-c", "-"], input=variant)
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                raise AssertionError(f"{base} {case}: {result.exception!r}") from result.exception
            _check(result.exit_code, result.stdout, result.stderr, secrets, f"{base} {case}")
            count += 1
    assert count > 700  # the run fed 726 variants


def test_the_base_files_pass_and_a_missing_username_does_not_print_the_password(
        bases: dict[str, tuple[str, list[str]]]) -> None:
    _register()
    runner = CliRunner()
    for text, _ in bases.values():
        assert runner.invoke(cli, ["validate", "-c", "-"], input=text).exit_code == 0
    text = bases["generated"][0]
    data = yaml.safe_load(text)
    del data["api"]["auth"]["username"]
    result = runner.invoke(cli, ["validate", "-c", "-"], input=yaml.safe_dump(data))
    assert result.stderr == "pgha: <stdin>: api.auth: expected a mapping or 'none', got a mapping\n"


@pytest.mark.parametrize("case", ["as written", "postgresql.listen", "postgresql.bin_dir", "api.auth",
                                  "billion laughs", "python object"])
def test_the_real_command(bases: dict[str, tuple[str, list[str]]], case: str) -> None:
    text, secrets = bases["generated"]
    data = yaml.safe_load(text)
    if case == "postgresql.listen":
        data["postgresql"]["listen"] = "no-such-host.invalid"
    elif case == "postgresql.bin_dir":
        data["postgresql"]["bin_dir"] = "/usr/lib/postgresql/15/b\x00in"
    elif case == "api.auth":
        data["api"]["auth"] = {"password": secrets[2]}
    variant = HOSTILE_YAML.get(case) or yaml.safe_dump(data)
    proc = subprocess.run([sys.executable, "-m", "pgha", "validate", "-c", "-"], input=variant,
                          capture_output=True, text=True, timeout=60)
    _check(proc.returncode, proc.stdout, proc.stderr, secrets, case)
    assert proc.returncode == (0 if case == "as written" else 1)


def test_validate_warns_about_a_world_readable_node_file(bases: dict[str, tuple[str, list[str]]],
                                                         tmp_path: Path) -> None:
    _register()
    path = tmp_path / "pgha.yaml"
    path.write_text(bases["generated"][0])
    os.chmod(path, 0o644)
    result = CliRunner().invoke(cli, ["validate", "-c", str(path)])
    assert result.exit_code == 0 and ": OK" in result.stdout
    assert result.stderr == (f"pgha: warning: {path} holds passwords and every user of this host may read it "
                             f"(mode 0644); run: chmod 600 {path}\n")
    os.chmod(path, 0o600)
    assert CliRunner().invoke(cli, ["validate", "-c", str(path)]).stderr == ""
