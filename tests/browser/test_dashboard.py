"""Issue 12: the web dashboard of a real 3-node cluster in headless Chromium, served by a replica.

In order, on one cluster (api.auth configured): every member renders; an action without
credentials is refused and changes nothing; a switchover started from the page moves the
leader and the page shows it without a reload; a node whose agent and postmaster are
SIGKILLed turns red within ttl + 2 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgha.config import load
from pgha.demo import DemoCluster
from tests.browser.conftest import poll
from tests.support.cluster import leader_name, running_cluster, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.integration]

USER, PASSWORD = "admin", "dash-secret-1"
TTL = 6.0


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    auth = {"*": {"api": {"auth": {"username": USER, "password": PASSWORD}}}}
    with running_cluster(nodes=3, ttl=TTL, extra_node_config=auth) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def page(demo: DemoCluster, browser: Any) -> Any:
    """The dashboard of a replica (the page must work when a replica serves it)."""
    served = next(n.name for n in demo.state.nodes if n.name != leader_name(demo))  # type: ignore[union-attr]
    browser.get(load(demo.node(served).config).api.url + "/ui")
    browser.served = served
    return browser


def member(page: Any, name: str) -> Any:
    return page.find_element("css selector", f'.member[data-member="{name}"]')


# The page redraws every second: read every member box in one script, so nothing goes stale midway.
MEMBERS_JS = """return Array.from(document.querySelectorAll('.member')).map((e) => ({
  name: e.dataset.member, down: e.dataset.down, leader: e.dataset.leader, text: e.innerText,
  nested: e.parentElement.parentElement.closest('ul') !== document.getElementById('members')}));"""


def members(page: Any) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in page.execute_script(MEMBERS_JS)}


def text(page: Any, element_id: str) -> str:
    return str(page.find_element("id", element_id).text)


def shot(page: Any, screenshots: Path, name: str) -> None:
    page.save_screenshot(str(screenshots / f"{name}.png"))


def test_page_renders_every_member(demo: DemoCluster, page: Any, screenshots: Path) -> None:
    names = sorted(n.name for n in demo.state.nodes)  # type: ignore[union-attr]
    lead = leader_name(demo)
    deadline = time.monotonic() + 30
    poll("three members on the page", lambda: sorted(members(page)) == names, deadline)
    poll("the leader in the header", lambda: text(page, "leader") == lead, deadline)
    assert text(page, "served-by") == page.served and text(page, "served-role") == "replica"

    def settled() -> bool:
        boxes = members(page)
        for name in names:
            box = boxes[name]
            # Green, the leader flagged, the replicas under the leader in the tree, lag shown.
            ok = (box["down"], box["leader"], box["nested"]) == ("false", str(name == lead).lower(), name != lead)
            assert ok and "last rule" in box["text"] and "lag \u2013" not in box["text"], box
        return True

    poll("the tree to settle", settled, deadline)
    assert "cluster initialized" in text(page, "history")
    assert not page.find_element("id", "banner-dcs").is_displayed()
    shot(page, screenshots, "1-cluster")


def test_unauthenticated_action_is_refused(demo: DemoCluster, page: Any, screenshots: Path) -> None:
    lead = leader_name(demo)
    page.find_element("id", "pause-button").click()
    deadline = time.monotonic() + 10
    poll("the refusal", lambda: "authentication required" in text(page, "message"), deadline)
    assert "refused (HTTP 401)" in text(page, "message")
    page.find_element("id", "switchover-button").click()
    poll("the switchover refusal", lambda: "switchover" not in text(page, "message")
         and "HTTP 401" in text(page, "message"), deadline)
    shot(page, screenshots, "2-refused")
    # Nothing changed: not paused, same leader, no switchover pending.
    time.sleep(1.5)
    view = demo.view()
    assert not view.config.pause and view.switchover is None and leader_name(demo) == lead
    assert not page.find_element("id", "banner-paused").is_displayed()


def test_switchover_from_the_page(demo: DemoCluster, page: Any, screenshots: Path) -> None:
    old = leader_name(demo)
    target = next(n.name for n in demo.state.nodes  # type: ignore[union-attr]
                  if n.name not in (old, page.served))
    page.execute_script("window.pghaNoReload = 42;")
    page.find_element("id", "login-user").send_keys(USER)
    page.find_element("id", "login-password").send_keys(PASSWORD)
    page.find_element("id", "login-button").click()
    assert "signed in as admin" in text(page, "login-status")
    poll(f"{target} in the candidate list", lambda: page.find_element(
        "css selector", f'#switchover-candidate option[value="{target}"]'), time.monotonic() + 5)
    page.execute_script("document.getElementById('switchover-candidate').value = arguments[0];", target)
    page.find_element("id", "switchover-button").click()
    deadline = time.monotonic() + 60
    poll("the switchover to be accepted", lambda: f"to {target}" in text(page, "message"), deadline)
    shot(page, screenshots, "3-switchover-requested")
    poll(f"the page to show {target} as leader", lambda: text(page, "leader") == target
         and members(page)[target]["leader"] == "true", deadline)
    assert leader_name(demo) == target
    assert page.execute_script("return window.pghaNoReload;") == 42, "the page was reloaded"
    # The feed adds an event when it sees the change, which may be one refresh after the table shows it.
    poll("the switchover in the event feed", lambda: "switchover" in text(page, "events")
         and f"{target} is the leader" in text(page, "events"), time.monotonic() + 5)
    wait_for("the old leader back as a streaming replica", lambda: demo.view().members[old].state == "streaming",
             timeout=60)
    poll("every member green and the old leader streaming on the page", lambda: all(
        m["down"] == "false" for m in members(page).values())
        and "state streaming" in members(page)[old]["text"], time.monotonic() + 15)
    poll("the new timeline in the history", lambda: "switchover" in text(page, "history"), time.monotonic() + 10)
    shot(page, screenshots, "4-after-switchover")


def _kill_node(demo: DemoCluster, name: str) -> None:
    node = demo.node(name)
    postmaster = int((Path(node.data_dir) / "postmaster.pid").read_text().split("\n", 1)[0])
    for pid in (node.agent_pid, postmaster):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_killed_node_turns_red_within_ttl_plus_2s(demo: DemoCluster, page: Any, screenshots: Path) -> None:
    victim = next(n.name for n in demo.state.nodes  # type: ignore[union-attr]
                  if n.name not in (leader_name(demo), page.served))
    poll(f"{victim} green before the kill", lambda: members(page)[victim]["down"] == "false",
         time.monotonic() + 30)
    _kill_node(demo, victim)
    killed = time.monotonic()
    poll(f"{victim} red on the page", lambda: members(page)[victim]["down"] == "true",
         killed + TTL + 2)
    took = time.monotonic() - killed
    print(f"\n{victim} turned red {took:.1f}s after SIGKILL (ttl {TTL:.0f}s)")
    poll("the event", lambda: f"{victim} is gone" in text(page, "events"), time.monotonic() + 3)
    assert "gone" in members(page)[victim]["text"]
    shot(page, screenshots, "5-node-killed")


def test_banner_when_the_serving_agent_cannot_reach_etcd(demo: DemoCluster, page: Any, screenshots: Path) -> None:
    assert demo.state is not None and demo.state.etcd_pid
    banner = page.find_element("id", "banner-dcs")
    assert not banner.is_displayed()
    os.kill(demo.state.etcd_pid, signal.SIGSTOP)
    try:
        poll("the DCS banner", lambda: banner.is_displayed() and "cannot reach etcd" in banner.text,
             time.monotonic() + 20)
        poll("the DCS event", lambda: "cannot reach the DCS" in text(page, "events"), time.monotonic() + 3)
        shot(page, screenshots, "6-dcs-unreachable")
    finally:
        os.kill(demo.state.etcd_pid, signal.SIGCONT)
    poll("the banner to go", lambda: not banner.is_displayed(), time.monotonic() + 20)
