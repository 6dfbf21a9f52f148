"""The supervisor's page in a real browser (Debian's Chromium, headless) on the shipped
config, whose walkway the sample worker walks into: the alarm banner and the red
border, the totals from the history, the charts, the snapshot gallery and events
in words, at a desktop and a phone size."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import ROOT, chromium, free_port, wait_for
from tests.test_web import get

SHOTS = ROOT / "out" / "screenshots"


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--loop",
         "--station", "line-3", "--http", f"127.0.0.1:{port}",
         "--events", str(tmp / "events.jsonl"), "--snapshot_dir", str(tmp / "snapshots"),
         "--snapshot_graded"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or get(base + "/api/status")[0] == 200,
                 "the web view")
        assert proc.poll() is None, proc.communicate()[1]
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr


def _red_share(png: bytes) -> float:
    import cv2

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    b, g, r = (image[..., i].astype(np.int32) for i in range(3))
    return float(((r > 180) & (g < 70) & (b < 70)).mean())


def test_the_api_names_the_station_its_health_and_alarms(station: str) -> None:
    def alarm() -> dict[str, Any] | None:
        s = json.loads(get(station + "/api/status")[2])
        return s if s["alarm"] else None

    s = wait_for(alarm, "someone in the walkway")
    assert s["station"] == "line-3"
    worker = s["streams"]["worker_safety"]
    assert worker["health"] == "live" and worker["health_reason"].endswith("fps")
    assert any(a.startswith("KEEP-OUT walkway #") for a in worker["alarms"])
    assert s["streams"]["visual_inspection"]["passing"] == ["fresh_apple"]


def test_snapshots_are_listed_with_what_they_show_and_filtered(station: str) -> None:
    def listed(query: str) -> list[dict[str, Any]]:
        status, _, body = get(station + "/api/snapshots" + query)
        assert status == 200, body
        return list(json.loads(body)["snapshots"])

    wait_for(lambda: listed("?zone=walkway"), "a snapshot of the walkway entry")
    wait_for(lambda: listed("?grade=rotten_apple"), "a snapshot of the rotten apple")
    walkway = listed("?zone=walkway")
    assert all(e["zone"] == "walkway" and e["type"] == "keepout_enter" for e in walkway)
    assert get(station + "/snapshots/" + walkway[0]["snapshot"])[0] == 200
    assert all(e["stream"] == "visual_inspection" for e in listed("?camera=visual_inspection"))
    assert listed("?camera=nobody") == []
    for bad in ("?since=yesterday-ish", "?colour=red", "?limit=x", "?zone=a&zone=b"):
        status, _, body = get(station + "/api/snapshots" + bad)
        assert status == 400 and "error" in json.loads(body), bad


@pytest.mark.parametrize("size", ["1600,1000", "390,844"], ids=["desktop", "phone"])
def test_the_dashboard_shows_the_alarm_totals_charts_gallery_and_events(
        station: str, size: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    chrome = chromium(tmp_path / "profile", size)
    try:
        chrome.get(station + "/")
        banner = chrome.find_element(By.ID, "banner")

        def alarm_shown() -> bool:
            if "KEEP-OUT walkway" not in banner.text:
                return False
            pane = chrome.find_element(By.ID, "pane-worker_safety")
            return ("alarm" in (pane.get_attribute("class") or "")
                    and _red_share(banner.screenshot_as_png) > 0.5
                    and _red_share(pane.screenshot_as_png) > 0.02)  # its red border

        wait_for(alarm_shown, "the banner and the red border")
        SHOTS.mkdir(parents=True, exist_ok=True)
        assert chrome.save_screenshot(str(SHOTS / f"dashboard-{size.replace(',', 'x')}.png"))
        assert chrome.find_element(By.ID, "station").text == "line-3"
        wait_for(lambda: "LIVE" in chrome.find_element(By.ID, "status-worker_safety").text,
                 "the health line")
        # read through the page itself: it redraws these every second
        def texts(selector: str) -> list[str]:
            return list(chrome.execute_script(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)",
                selector))

        wait_for(lambda: any("Someone entered keep-out zone walkway" in t
                             for t in texts("li.event.keepout_enter")), "the entry in words")
        wait_for(lambda: any("Rotten apple FAIL" in t for t in texts("li.event.graded")),
                 "the grade in words")

        def today(row: str) -> str | None:
            return chrome.execute_script(  # type: ignore[no-any-return]
                "for (const r of document.querySelectorAll('#totals tbody tr'))"
                "  if (r.cells[0].textContent === arguments[0]) return r.cells[2].textContent;"
                "return null;", row)

        wait_for(lambda: today("keep-out entries") not in (None, "-", "0"),
                 "today's entries from the history")
        assert set(chrome.execute_script(
            "return [...document.querySelectorAll('#charts .chart')]"
            ".map(c => c.dataset.series)")) == {"inspected", "rejects", "keep-out entries"}
        wait_for(lambda: texts("#gallery figcaption"), "the gallery")
        chrome.execute_script("document.querySelector('#gallery figure').click()")
        wait_for(lambda: chrome.find_element(By.ID, "big").get_attribute("open") is not None,
                 "the snapshot enlarged")
        # nothing is wider than the screen: a phone scrolls down, never sideways
        assert chrome.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1")
    finally:
        chrome.quit()


def test_the_page_works_without_a_history(tmp_path: Path) -> None:
    """No event log, so no history: the totals say so by their dashes, nothing breaks."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--loop",
         "--http", f"127.0.0.1:{port}"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or get(base + "/api/status")[0] == 200,
                 "the web view")
        assert get(base + "/api/history")[0] == 404
        status, _, body = get(base + "/api/snapshots")
        assert status == 200 and json.loads(body) == {"snapshots": []}
        assert b"Per hour" in get(base + "/")[2]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
