"""The dashboard in a real browser (Debian's chromium through Playwright) against one
embedded cloud shared by the module: every page loads without console errors and fetches
nothing from elsewhere; `vimha chaos power-off cmp-2` turns cmp-2 red and a new alarm
appears without a reload; an operator acknowledges an alarm, a reader cannot."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import require_system
from tests.support.browser import WAIT_MS, Session, chromium, chromium_path
from tests.system.test_embedded_cloud import Cloud, running_cloud, until
from vimha.api.ui.pages import PAGES

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    require_system(importlib.util.find_spec("playwright") is not None, "playwright missing")
    require_system(chromium_path() is not None, "chromium missing")
    with running_cloud(tmp_path_factory.mktemp("dashboard")) as c:
        yield c


@pytest.fixture(scope="module")
def browser(cloud: Cloud) -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def operator(browser: Any, cloud: Cloud) -> Iterator[Session]:
    s = Session(browser, cloud, "operator")
    yield s
    s.close()


@pytest.fixture(scope="module")
def reader(browser: Any, cloud: Cloud) -> Iterator[Session]:
    s = Session(browser, cloud, "reader")
    yield s
    s.close()


def test_every_page_loads_without_console_errors(operator: Session, reader: Session) -> None:
    shown = operator.page.locator("header.top nav a").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))"
    )
    # every page whose data exists here: the embedded cloud runs no SDN without --netns
    assert shown == [f"/ui/{p.slug}" for p in PAGES if p.slug != "sdn"]
    for session in (operator, reader):
        for page in PAGES:
            if page.slug == "sdn":
                continue
            session.goto(page.slug)
            assert session.page.title().startswith(page.title)
            assert session.page.locator("#live-body").count() == 1
        assert session.errors == [], session.errors
        assert session.hosts == {urlsplit(session.cloud.url).netloc}, session.hosts
    assert operator.page.locator("header.top .who").inner_text().startswith("operator")
    # a filter narrows the topology in place, and the address keeps it
    page = operator.goto("topology")
    page.fill("#f-q", "cmp-3")
    expect(page.locator("#live .tile")).to_have_count(1, timeout=WAIT_MS)
    assert page.locator('.tile[data-host="cmp-3"]').count() == 1
    page.wait_for_url(re.compile(r".*/ui/topology\?.*q=cmp-3"))
    assert page.evaluate("window.vimhaNotReloaded") is True
    assert operator.errors == [], operator.errors


def test_power_off_turns_the_host_red_and_raises_an_alarm_live(
    operator: Session, cloud: Cloud
) -> None:
    topology = operator.goto("topology")
    alarms = operator.goto("alarms", operator.open())
    tile = topology.locator('[data-host="cmp-2"]')
    assert tile.get_attribute("data-health") == "UP"
    before = set(
        alarms.locator("tr[data-alarm]").evaluate_all("rs => rs.map(r => r.dataset.alarm)")
    )

    cloud.chaos("power-off", "cmp-2")

    topology.wait_for_selector(
        '[data-host="cmp-2"][data-health="DOWN"], [data-host="cmp-2"][data-health="FENCED"]'
    )
    red, green, _ = map(
        int, re.findall(r"\d+", tile.evaluate("e => getComputedStyle(e).backgroundColor"))[:3]
    )
    assert red > 120 and green < 80, (red, green)
    alarms.wait_for_selector('tr[data-alarm][data-object^="cmp-2"]')
    after = set(alarms.locator("tr[data-alarm]").evaluate_all("rs => rs.map(r => r.dataset.alarm)"))
    assert after - before, "no new alarm row"
    for page in (topology, alarms):
        assert page.evaluate("window.vimhaNotReloaded") is True  # the same document
    assert operator.errors == [], operator.errors


def test_an_operator_acknowledges_a_reader_cannot(
    operator: Session, reader: Session, cloud: Cloud
) -> None:
    alarm_id = until(lambda: _unacknowledged(cloud, "cmp-2"), 60)
    row = f'tr[data-alarm="{alarm_id}"]'

    page = reader.goto("alarms")
    page.wait_for_selector(row)
    assert page.locator(f"{row} button").count() == 0  # nothing to click
    forged = page.request.post(  # and the request itself is refused
        f"{cloud.url}/ui/alarms/{alarm_id}/ack",
        form={"csrf": reader.csrf()},
        headers={"Origin": cloud.url},
    )
    assert forged.status == 403 and "needs operator" in forged.text()
    assert _ack_state(cloud, alarm_id) == "UNACKNOWLEDGED"

    page = operator.goto("alarms")
    page.click(f"{row} button:text('Acknowledge')")
    page.wait_for_selector(f"{row} .pill.ok")
    assert "acknowledged by operator" in page.locator("#flash .notice").inner_text()
    assert _ack_state(cloud, alarm_id) == "ACKNOWLEDGED"
    assert page.evaluate("window.vimhaNotReloaded") is True
    # the reader's page follows, live
    reader.page.wait_for_selector(f"{row} .pill.ok")
    assert reader.errors == [], reader.errors


def _unacknowledged(cloud: Cloud, obj: str) -> str | None:
    """The host's own alarm (it stays while the host is fenced), not one of its parts'."""
    for a in cloud.get("/vimfm/v1/alarms"):
        if a["managedObjectId"] == obj and a["ackState"] == "UNACKNOWLEDGED":
            return str(a["id"])
    return None


def _ack_state(cloud: Cloud, alarm_id: str) -> str:
    return str(cloud.get(f"/vimfm/v1/alarms/{alarm_id}")["ackState"])


def test_screenshot_script(cloud: Cloud, tmp_path: Path) -> None:
    """scripts/ui-screenshots.py makes one picture per page from a running cloud."""
    import subprocess
    import sys

    out = tmp_path / "ui"
    r = subprocess.run(
        [
            sys.executable,
            "scripts/ui-screenshots.py",
            "--data-dir",
            str(cloud.data),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert r.returncode == 0, r.stderr
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == sorted(f"{p.slug}.png" for p in PAGES if p.slug != "sdn")
    assert httpx.get(f"{cloud.url}/ui/login").status_code == 200
