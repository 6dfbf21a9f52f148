"""Zones drawn from the browser: the writer that keeps a config file's comments and
layout, the API against the running application (roles, origin, CSRF, bad bodies), and
the editor page in a real Chromium, where an admin draws and renames a zone that the
run then applies."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coral_mfg.config.settings import read_config_file
from coral_mfg.config.zone_file import Shapes, edited_toml, shapes_from_json, write_shapes
from coral_mfg.config.zones import LineSpec, PresenceSpec, ZoneSource, ZoneSpec
from coral_mfg.core.errors import ConfigError
from tests.conftest import ROOT, chromium, free_port, video, wait_for
from tests.test_web import APP, get

WORKER, APPLES = "worker-zone-detection.mp4", "apple-conveyor.mp4"
VIEWER, ADMIN = "viewer-t0ken-for-tests", "admin-t0ken-for-tests"

STATION = """\
# A station of two cameras (kept comment)
station = "line-7"   # its name in every event

[cameras.floor]
input = "{worker}"  # the press floor
roles = ["safety"]

# the press's marking on the floor
[[cameras.floor.zones]]
name = "press"   # painted red
points = [[0.1, 0.55], [0.35, 0.55], [0.35, 0.95], [0.1, 0.95]]
units = "relative"
enter_frames = 3   # written although it is the default

# the belt camera
[cameras.belt]
input = "{apples}"
roles = ["inspection"]

[[cameras.belt.lines]]
name = "end"
points = [[0.3, 0.46], [1.0, 0.46]]
units = "relative"
directions = ["down", "up"]
"""


def _zone(name: str, points: Any, **more: Any) -> ZoneSpec:
    return ZoneSpec(name=name, points=points, units="relative", **more)


SQUARE = ((0.5, 0.5), (0.7, 0.5), (0.7, 0.7), (0.5, 0.7))
PRESS = ((0.1, 0.55), (0.35, 0.55), (0.35, 0.95), (0.1, 0.95))


# --- the writer ---------------------------------------------------------------------------


def test_the_writer_keeps_comments_order_and_compact_layout() -> None:
    text = STATION.format(worker="a.mp4", apples="b.mp4")
    moved = ((0.12, 0.5), (0.35, 0.55), (0.35, 0.95), (0.1, 0.95))
    shapes = Shapes(zones=(_zone("press-1", moved), _zone("walkway", SQUARE, enabled=False)),
                    presence=(PresenceSpec(name="tray", label="bottle", expected=2,
                                           points=SQUARE, units="relative"),))
    out = edited_toml(text, "floor", shapes, ["zones", "presence"])
    lines = out.splitlines()
    # every comment kept, in its place; the rest of the file untouched
    for comment in ("# A station of two cameras (kept comment)", "# the belt camera",
                    "# the press's marking on the floor"):
        assert comment in lines
    assert out.startswith(text[:text.index("# the press's")])
    assert out.endswith(text[text.index("# the belt camera"):])
    assert 'name = "press-1"   # painted red' in lines  # renamed in place, comment kept
    assert "enter_frames = 3   # written although it is the default" in lines
    # points on one line each; defaults not written for new tables
    assert "points = [[0.12, 0.5], [0.35, 0.55], [0.35, 0.95], [0.1, 0.95]]" in lines
    assert "points = [[0.5, 0.5], [0.7, 0.5], [0.7, 0.7], [0.5, 0.7]]" in lines
    walkway = out[out.index('name = "walkway"'):out.index("[[cameras.floor.presence]]")]
    assert walkway.split("\n")[1:] == ["points = [[0.5, 0.5], [0.7, 0.5], [0.7, 0.7], "
                                       "[0.5, 0.7]]", 'units = "relative"', "enabled = false",
                                       "", ""]
    # the tables in order, a blank line between them, the heading of the belt after them
    order = [line for line in lines if line.startswith("[")]
    assert order == ["[cameras.floor]", "[[cameras.floor.zones]]", "[[cameras.floor.zones]]",
                     "[[cameras.floor.presence]]", "[cameras.belt]", "[[cameras.belt.lines]]"]
    assert out.count("\n\n\n") == 0
    data = tomllib.loads(out)
    assert [z["name"] for z in data["cameras"]["floor"]["zones"]] == ["press-1", "walkway"]
    assert data["cameras"]["floor"]["presence"][0]["expected"] == 2
    # deleting a shape takes its own lines away, and nothing else
    again = edited_toml(out, "floor", Shapes(zones=(_zone("press-1", moved),)), ["zones"])
    assert "walkway" not in again and "# the belt camera" in again
    assert again.count("[[cameras.floor.presence]]") == 1


def test_the_writer_replaces_atomically_keeps_permissions_and_refuses_a_bad_file(
        tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(STATION.format(worker="a.mp4", apples="b.mp4"))
    path.chmod(0o600)  # it may hold passwords
    source = ZoneSource(path, "toml", "floor")
    write_shapes(source, Shapes(zones=(_zone("press", PRESS), _zone("b", SQUARE))), ["zones"],
                 read_config_file)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [z.name for z in read_config_file(path)["cameras"][0].zones] == ["press", "b"]
    before = path.read_text()
    # a file the run would refuse is never written: the safety camera keeps a zone
    with pytest.raises(ConfigError, match="safety role but no keep-out zones"):
        write_shapes(source, Shapes(), ["zones"], read_config_file)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["station.toml"]  # no leftovers
    # the original demo's CSV holds one zone's points
    csv = tmp_path / "zone.csv"
    write_shapes(ZoneSource(csv, "csv"), Shapes(zones=(
        ZoneSpec(name="zone", points=((150, 400), (400, 400), (400, 480.5))),)), ["zones"],
        lambda p: None)
    assert csv.read_text() == "x,y\n150,400\n400,400\n400,480.5\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the body must be a JSON object"),
        ({"zone": []}, "unknown key 'zone'"),
        ({}, "nothing to change"),
        ({"zones": {}}, '"zones" must be a list of objects'),
        ({"zones": [{"name": "a", "points": [[0, 0], [1, 1]]}]}, "needs at least 3 points"),
        ({"zones": [{"name": "", "points": [[0, 0], [1, 0], [1, 1]]}]}, "needs a non-empty"),
        ({"zones": [{"name": "a", "points": [[0, 0]] * 65}]}, "at most 64 points"),
        ({"zones": [{"name": "a", "points": [[0, 0], [1, 0], [1, 1]], "colour": "#fff"}]},
         "unknown key 'colour' (did you mean color?)"),
        ({"lines": [{"name": "l", "points": [[0, 0], [0, 0]]}]}, "two different ends"),
    ],
)
def test_a_bad_body_is_refused_in_one_line(body: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=r".*") as caught:
        shapes_from_json(body, Shapes(lines=(LineSpec(name="l", points=((0, 0), (1, 1))),)))
    assert message in str(caught.value) and "\n" not in str(caught.value)


# --- the running application --------------------------------------------------------------


class Station:
    """The application on the sample videos, with a two-camera config and both tokens."""

    def __init__(self, tmp: Path, text: str = STATION) -> None:
        self.config = tmp / "station.toml"
        self.config.write_text(text.format(worker=video(WORKER), apples=video(APPLES)))
        self.events = tmp / "events.jsonl"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*APP, "--config", str(self.config), "--http", f"127.0.0.1:{self.port}",
             "--events", str(self.events)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "CORAL_MFG_HTTP_TOKEN": VIEWER,
                 "CORAL_MFG_HTTP_ADMIN_TOKEN": ADMIN})
        wait_for(lambda: self.proc.poll() is not None or get(
            self.base + "/api/status", {"Authorization": f"Bearer {VIEWER}"})[0] == 200,
            "the web view")
        assert self.proc.poll() is None, self.proc.communicate()[1]

    def api(self, camera: str, token: str | None, body: Any = None, method: str = "GET",
            **headers: str) -> tuple[int, Any]:
        sent = {"Content-Type": "application/json", **headers}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        status, _, answer = get(f"{self.base}/api/cameras/{camera}/zones", sent, method, data)
        try:
            return status, json.loads(answer)
        except ValueError:
            return status, answer.decode()

    def logged(self) -> list[dict[str, Any]]:
        if not self.events.exists():
            return []
        return [json.loads(line) for line in self.events.read_text().splitlines() if line]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, stderr = self.proc.communicate(timeout=60)
        return stderr


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Station]:
    running = Station(tmp_path_factory.mktemp("station"))
    try:
        yield running
    finally:
        log = running.stop()
        assert "Traceback" not in log
        for secret in (VIEWER, ADMIN):
            assert secret not in log
            assert secret not in running.events.read_text()


def test_viewers_read_admins_change_and_nobody_else(station: Station) -> None:
    status, zones = station.api("floor", VIEWER)
    assert status == 200 and zones["editable"] == ["zones", "lines", "presence"]
    assert [z["name"] for z in zones["zones"]] == ["press"] and zones["admin"] is False
    new = {"zones": [*zones["zones"], {"name": "x", "points": list(map(list, SQUARE)),
                                       "units": "relative"}]}
    before = station.config.read_text()
    # no token: 401, in the API's one-line JSON (a page's script reads it); the viewer's
    # token may not write, even on loopback: 403
    status, answer = station.api("floor", None, new, "PUT")
    assert status == 401 and "a token is required" in answer["error"]
    status, answer = station.api("floor", VIEWER, new, "PUT")
    assert status == 403 and "admin token" in answer["error"]
    # the admin's token from another origin: 403
    status, answer = station.api("floor", ADMIN, new, "PUT", Origin="http://evil.example")
    assert status == 403 and "another site" in answer["error"]
    assert station.api("floor", VIEWER, None, "GET", Origin="http://evil.example")[0] == 403
    # bad bodies: one line each, nothing written
    for body, code, words in (
            (b'{"zones": [', 400, "not JSON"),
            (b'{"zones": [{"name": "a", "points": [[NaN, 0], [1, 0], [1, 1]]}]}', 400,
             "NaN"),
            ({"zones": [{"name": "a", "points": [[0, 0], [1, 0]]}]}, 422, "3 points"),
            ({"zones": [{"name": "a", "points": [[0, 0], [2, 0], [1, 1]],
                         "units": "relative"}]}, 422, "between 0 and 1"),
            ({"zones": []}, 422, "at least one zone"),
            ({"presence": [{"name": "p", "label": "bottel", "expected": 1,
                            "points": [[0, 0], [1, 0], [1, 1]], "units": "relative"}]},
             422, "did you mean 'bottle'"),
            (b"x" * (65 * 1024), 413, "larger than"),
    ):
        status, answer = station.api("floor", ADMIN, body, "PUT")
        assert status == code, (body, answer)
        assert words in answer["error"] and "\n" not in answer["error"]
    status, answer = station.api("floor", ADMIN, new, "PUT", **{"Content-Type": "text/plain"})
    assert status == 400
    status, answer = station.api("belt", ADMIN, new, "PUT")
    assert status == 409 and "no safety role" in answer["error"]
    status, answer = station.api("nowhere", ADMIN)
    assert status == 404 and answer == {"error": "no camera named 'nowhere'"}
    assert station.config.read_text() == before
    # the admin's token: saved, in force, told
    status, answer = station.api("belt", ADMIN, {"lines": [
        {"name": "end", "points": [[0.3, 0.46], [1.0, 0.46]], "units": "relative",
         "directions": ["down", "up"], "enabled": False}]}, "PUT")
    assert status == 200 and answer["changes"] == ["disabled line 'end'"]
    assert "enabled = false" in station.config.read_text()
    changed = wait_for(lambda: [e for e in station.logged() if e["type"] == "zones_changed"],
                       "the zones_changed event")
    assert changed[0]["stream"] == "belt" and changed[0]["changes"] == ["disabled line 'end'"]
    assert changed[0]["by"].startswith("admin token (bearer")
    wait_for(lambda: "end" not in json.loads(get(
        station.base + "/api/status", {"Authorization": f"Bearer {VIEWER}"})[2])[
        "streams"]["belt"]["lines"], "the line out of force")


def test_an_admin_draws_and_renames_a_zone_in_chromium(station: Station,
                                                       tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    chrome = chromium(tmp_path / "profile", "1400,900")
    try:
        # the main page links to the editor; the editor asks for the admin token
        chrome.get(station.base + "/cameras/floor/zones")
        chrome.find_element(By.NAME, "token").send_keys(ADMIN + Keys.ENTER)
        wait_for(lambda: chrome.find_elements(By.CSS_SELECTOR, "#tools:not([hidden])"),
                 "the editor's tools")
        wait_for(lambda: chrome.find_elements(By.CSS_SELECTOR, "svg polygon"), "the zone")
        assert chrome.find_element(By.ID, "who").text == "signed in as admin"
        # add a zone, and name it
        chrome.find_element(By.ID, "add-zone").click()
        name = chrome.find_element(By.CSS_SELECTOR, ".shape.selected input.name")
        assert name.get_attribute("value") == "zone-1"
        name.send_keys(Keys.CONTROL, "a")
        name.send_keys("walkway")
        # drag its first corner (0.4, 0.4 of the picture) towards the top left
        handle = chrome.find_element(By.CSS_SELECTOR, "circle.handle[data-j='0']")
        ActionChains(chrome).click_and_hold(handle).move_by_offset(-60, -40).release().perform()
        assert chrome.find_element(By.ID, "message").text == "not saved yet"
        # a write without the session's CSRF token is refused, even from this page
        refused = chrome.execute_async_script(
            "const done = arguments[0]; fetch('/api/cameras/floor/zones', {method: 'PUT', "
            "headers: {'Content-Type': 'application/json'}, body: '{\"zones\": []}'})"
            ".then(r => r.json().then(b => done([r.status, b.error])));")
        assert refused[0] == 403 and "CSRF" in refused[1]
        chrome.find_element(By.ID, "save").click()
        wait_for(lambda: "saved and in force" in chrome.find_element(By.ID, "message").text,
                 "the save")
        said = chrome.find_element(By.ID, "message").text
        assert "added zone 'walkway'" in said
        shot = ROOT / "out" / "screenshots" / "zone-editor.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert chrome.save_screenshot(str(shot))
    finally:
        chrome.quit()
    # the config keeps its comments; the new zone is there, its points on one line
    text = station.config.read_text()
    assert "# A station of two cameras (kept comment)" in text
    assert 'name = "press"   # painted red' in text and "# the belt camera" in text
    zones = tomllib.loads(text)["cameras"]["floor"]["zones"]
    assert [z["name"] for z in zones] == ["press", "walkway"]
    corner = zones[1]["points"][0]
    assert corner[0] < 0.4 and corner[1] < 0.4  # dragged up and left
    assert f"points = {json.dumps(zones[1]['points'])}" in text
    # the run applies it, and tells who changed what
    event = wait_for(lambda: [e for e in station.logged() if e["type"] == "zones_changed"
                              and e["stream"] == "floor"], "the event")[0]
    assert event["changes"] == ["added zone 'walkway'"]
    assert event["by"].startswith("admin token (browser session")
    assert event["zones"] == ["press", "walkway"]
    status = json.loads(get(station.base + "/api/status",
                            {"Authorization": f"Bearer {VIEWER}"})[2])
    assert [z["name"] for z in status["streams"]["floor"]["zones"]] == ["press", "walkway"]


def test_a_viewer_sees_the_zones_read_only_in_chromium(station: Station,
                                                       tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    chrome = chromium(tmp_path / "profile", "1400,900")
    try:
        chrome.get(station.base + "/")
        chrome.find_element(By.NAME, "token").send_keys(VIEWER + Keys.ENTER)
        link = wait_for(lambda: chrome.find_elements(By.CSS_SELECTOR,
                                                     "#pane-floor a.edit-zones"), "the link")
        link[0].click()
        wait_for(lambda: chrome.find_elements(By.CSS_SELECTOR, "svg polygon"), "the zones")
        assert chrome.find_element(By.ID, "who").text == "view only"
        assert not chrome.find_element(By.ID, "tools").is_displayed()
        assert not chrome.find_elements(By.CSS_SELECTOR, "circle.handle")
        # its session cannot write, whatever it sends
        refused = chrome.execute_async_script(
            "const done = arguments[0]; fetch('/api/cameras/floor/zones', {method: 'PUT', "
            "headers: {'Content-Type': 'application/json', 'X-CSRF-Token': 'x'}, "
            "body: '{\"zones\": []}'}).then(r => done(r.status));")
        assert refused == 403
    finally:
        chrome.quit()


TWO_FLOORS = "".join(
    f'[cameras.{camera}]\ninput = "{{worker}}"\nroles = ["safety"]\n\n'
    f'[[cameras.{camera}.zones]]\nname = "{zone}"\npoints = {json.dumps(points)}\n'
    'units = "relative"\n\n'
    for camera, zone, points in (("floor", "press", [[0.1, 0.55], [0.35, 0.55], [0.35, 0.95],
                                                       [0.1, 0.95]]),
                                 ("dock", "ramp", [list(p) for p in SQUARE])))


def test_a_refused_hand_edit_is_mended_from_the_editor(tmp_path: Path) -> None:
    """A hand edit breaks one camera's zone: every camera of the file keeps its last good
    zones and says the file was refused. Saving the zones in force from the editor writes
    the file whole again, and no camera stays degraded."""
    station = Station(tmp_path, TWO_FLOORS)
    try:
        good = station.config.read_text()
        station.config.write_text(good.replace(
            "points = [[0.1, 0.55], [0.35, 0.55], [0.35, 0.95], [0.1, 0.95]]",
            "points = [[0.1, 0.55], [0.35, 0.55]]"))

        def status() -> dict[str, Any]:
            answer: dict[str, Any] = json.loads(get(
                station.base + "/api/status", {"Authorization": f"Bearer {VIEWER}"})[2])
            return answer

        def degraded() -> set[str]:
            return {name for name, s in status()["streams"].items()
                    if "zone file refused" in (s.get("health_reason") or "")}

        wait_for(lambda: degraded() == {"floor", "dock"}, "both cameras refusing the file")
        code, zones = station.api("floor", ADMIN)
        assert code == 200 and len(zones["zones"][0]["points"]) == 4  # the zones in force
        code, answer = station.api("floor", ADMIN, {"zones": zones["zones"]}, "PUT")
        assert code == 200, answer
        assert answer["changes"] == ["saved the zones in force over the refused file"]
        read_config_file(station.config)  # whole again
        wait_for(lambda: not degraded(), "no camera degraded")
        warnings = [line for line in station.stop().splitlines()
                    if "zones not reloaded" in line]
        assert len(warnings) == 1, warnings  # one file, one fault: one warning
    finally:
        station.stop()
