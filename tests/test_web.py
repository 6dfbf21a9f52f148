"""The web view against the running application on the sample videos: HTTP status codes,
metrics, health, the token, and a real browser (Debian's Chromium, headless)."""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, chromium, free_port, video, wait_for

APP = [sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu", "--loop"]
ZONE_CSV = "x,y\n150,400\n400,400\n400,480\n150,480\n"
#: The application under a lower open-file limit, set in its own process before it starts.
LIMITED = ("import resource, runpy; resource.setrlimit(resource.RLIMIT_NOFILE, ({0}, {0})); "
           "runpy.run_module('coral_mfg', run_name='__main__', alter_sys=True)")






def get(url: str, headers: dict[str, str] | None = None, method: str = "GET",
        data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body); never raises on an HTTP status."""
    request = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except OSError:
        return 0, {}, b""


class App:
    """The application on the samples with ``--http`` on a free loopback port."""

    def __init__(self, tmp: Path, *extra: str, bind: str = "127.0.0.1",
                 env: dict[str, str] | None = None, max_files: int | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        zone = tmp / "zone.csv"
        zone.write_text(ZONE_CSV)
        self.events = tmp / "events.jsonl"
        app = APP if max_files is None else [
            sys.executable, "-c", LIMITED.format(max_files), *APP[3:]]
        self.proc = subprocess.Popen(
            [*app, "--http", f"{bind}:{self.port}", "--events", str(self.events),
             "--keepout_points_path", str(zone), *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})

    def ready(self, headers: dict[str, str] | None = None) -> None:
        wait_for(lambda: self.proc.poll() is not None or get(
            self.base + "/api/status", headers)[0] == 200, "the web view")
        assert self.proc.poll() is None, self.proc.communicate()[1]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, stderr = self.proc.communicate(timeout=60)
        return stderr


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    running = App(tmp_path)
    try:
        running.ready()
        yield running
    finally:
        running.stop()


def test_endpoints_answer_with_the_run_state(app: App) -> None:
    status, headers, body = get(app.base + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"/video/worker_safety.mjpg" in body and b"http" not in body.replace(
        b"http-equiv", b"")  # everything from this server: no CDN
    state = json.loads(get(app.base + "/api/status")[2])
    assert set(state["streams"]) == {"worker_safety", "visual_inspection"}
    assert state["streams"]["worker_safety"]["status"] == "live"
    assert state["streams"]["worker_safety"]["zones"][0]["name"] == "zone"
    assert state["streams"]["visual_inspection"]["zones"] == []
    health = get(app.base + "/healthz")
    assert health[0] == 200 and json.loads(health[2])["status"] == "ok"
    wait_for(lambda: any(e["type"] == "keepout_enter"
                      for e in json.loads(get(app.base + "/api/events")[2])), "an entry")
    for method in ("POST", "PUT", "DELETE"):  # nothing writes
        assert get(app.base + "/api/status", method=method, data=b"")[0] == 405


def test_metrics_have_conventional_names_and_labels(app: App) -> None:
    wait_for(lambda: b'coral_mfg_keepout_entries_total{stream="worker_safety",zone="zone"} 1.0'
          in get(app.base + "/metrics")[2], "an entry counted")
    status, headers, body = get(app.base + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for needle in (
        'coral_mfg_frames_total{stream="worker_safety"}',
        'coral_mfg_dropped_frames_total{stream="visual_inspection"}',
        'coral_mfg_errors_total{stream="worker_safety"}',
        'coral_mfg_source_up{stream="worker_safety"} 1.0',
        'coral_mfg_fps{stream="visual_inspection"}',
        'coral_mfg_latency_seconds_bucket{le="0.1",stream="worker_safety"}',
        'coral_mfg_inference_seconds_bucket{le="0.05",model="detector"}',
        'coral_mfg_inference_seconds_count{model="classifier"}',
        'coral_mfg_zone_people{stream="worker_safety",zone="zone"}',
        'coral_mfg_inspected_total{grade="fresh_apple",stream="visual_inspection"}',
        'coral_mfg_accelerator_up{device="cpu"} 1.0',
        "coral_mfg_accelerator_fallback 0.0",
        "coral_mfg_uptime_seconds",
        'coral_mfg_output_lost_total{output="events"} 0.0',
    ):
        assert needle in text, needle


@pytest.mark.parametrize(
    "path",
    ["/snapshots/..%2Fevents.jsonl", "/snapshots/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
     "/snapshots/.hidden.jpg", "/snapshots/missing.jpg", "/video/other.mjpg"],
)
def test_nothing_outside_the_snapshot_folder_is_served(app: App, path: str) -> None:
    assert get(app.base + path)[0] == 404


def test_a_snapshot_is_served_from_its_folder(app: App) -> None:
    entry = wait_for(lambda: next((e for e in json.loads(get(app.base + "/api/events")[2])
                                if e["type"] == "keepout_enter"), None), "an entry")
    status, headers, body = get(app.base + "/snapshots/" + Path(entry["snapshot"]).name)
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"


def test_health_is_503_while_a_source_is_lost(tmp_path: Path) -> None:
    cam_port = free_port()

    def camera() -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mjpeg_server.py"),
                                 str(video("worker-zone-detection.mp4")), str(cam_port)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    cam = camera()
    app = App(tmp_path, "--worker_safety_input", f"http://127.0.0.1:{cam_port}/stream.mjpg")
    try:
        app.ready()
        wait_for(lambda: get(app.base + "/healthz")[0] == 200, "healthy")
        cam.kill()
        cam.wait(10)
        _status, _, body = wait_for(lambda: (r := get(app.base + "/healthz"))[0] == 503 and r,
                                "503")
        report = json.loads(body)
        assert report["status"] == "unhealthy"
        assert report["streams"]["worker_safety"].startswith("NO SIGNAL")
        assert report["streams"]["visual_inspection"] == "live"
        state = json.loads(get(app.base + "/api/status")[2])["streams"]
        assert state["worker_safety"]["status"] == "no_signal"
        assert state["worker_safety"]["reason"].startswith("NO SIGNAL")
        assert state["visual_inspection"]["status"] == "live"
        metrics = get(app.base + "/metrics")[2].decode()
        assert 'coral_mfg_source_up{stream="worker_safety"} 0.0' in metrics
        cam = camera()
        wait_for(lambda: get(app.base + "/healthz")[0] == 200, "healthy again")
    finally:
        app.stop()
        cam.kill()
        cam.wait(10)


def test_off_loopback_a_token_is_required(tmp_path: Path) -> None:
    refused = subprocess.run([*APP, "--http", f"0.0.0.0:{free_port()}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120, check=False,
                             env={k: v for k, v in os.environ.items()
                                  if k != "CORAL_MFG_HTTP_TOKEN"})
    assert refused.returncode == 2
    assert "is reachable from other machines: set a token" in refused.stderr.splitlines()[-1]

    app = App(tmp_path, bind="0.0.0.0", env={"CORAL_MFG_HTTP_TOKEN": "s3cret-token"})
    bearer = {"Authorization": "Bearer s3cret-token"}
    try:
        app.ready(bearer)
        for path in ("/api/status", "/api/events", "/metrics", "/healthz",
                     "/video/worker_safety.mjpg", "/snapshots/x.jpg"):
            status, _, body = get(app.base + path)
            assert status == 401 and b"coral_mfg_" not in body and b"streams" not in body
            assert get(app.base + path, {"Authorization": "Bearer wrong"})[0] == 401
        assert get(app.base + "/api/status", bearer)[0] == 200
        status, _, page = get(app.base + "/")
        assert status == 401 and b'name="token"' in page and b"mjpg" not in page
        # the login form sets a cookie that opens the page
        assert get(app.base + "/login", method="POST", data=b"token=wrong")[0] == 401
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(urllib.request.Request(app.base + "/login", data=b"token=s3cret-token",
                                                method="POST"), timeout=10) as r:
            assert r.status == 200 and b"/video/worker_safety.mjpg" in r.read()
        cookie = next(c for c in jar if c.name == "coral_mfg_token")
        assert cookie.value and "s3cret" not in cookie.value  # derived, never the token
        assert get(app.base + "/api/status", {"Cookie": f"coral_mfg_token={cookie.value}"}
                   )[0] == 200
        assert get(app.base + "/api/status", {"Cookie": "coral_mfg_token=s3cret-token"}
                   )[0] == 401
    finally:
        stderr = app.stop()
    assert "s3cret-token" not in stderr


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*APP, "--http", f"127.0.0.1:{port}"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"cannot listen on 127.0.0.1:{port}" in last and "another --http" in last


def test_systemd_is_told_ready_alive_and_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(1.0)
        proc = subprocess.Popen([*APP], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "NOTIFY_SOCKET": path,
                                     "WATCHDOG_USEC": "1000000"})
        got: list[str] = []

        def receive(until: str) -> bool:
            with contextlib.suppress(TimeoutError):
                got.append(sock.recv(256).decode())
            return until in got

        try:
            wait_for(lambda: receive("READY=1"), "READY=1")
            wait_for(lambda: receive("WATCHDOG=1"), "a watchdog ping")
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: receive("STOPPING=1"), "STOPPING=1")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=60)
    assert got.index("READY=1") < got.index("WATCHDOG=1") < got.index("STOPPING=1")


def test_a_browser_sees_both_panes_move_and_an_event(app: App) -> None:
    """Debian's Chromium, headless, driven by Debian's chromedriver."""
    from selenium.webdriver.common.by import By

    chrome = chromium(app.events.parent / "chromium-profile")
    try:
        chrome.get(app.base + "/")

        def pane(name: str) -> bytes:
            return chrome.find_element(By.ID, f"video-{name}").screenshot_as_png

        for name in ("worker_safety", "visual_inspection"):
            wait_for(lambda n=name: chrome.execute_script(  # type: ignore[misc]
                f"return document.getElementById('video-{n}').naturalWidth") > 0,
                f"the {name} pane")
        first = {n: pane(n) for n in ("worker_safety", "visual_inspection")}
        for name in first:
            wait_for(lambda n=name: pane(n) != first[n], f"the {name} pane to change")  # type: ignore[misc]
        wait_for(lambda: chrome.find_elements(By.CSS_SELECTOR, "li.event.keepout_enter"),
              "an event on the page")
        wait_for(lambda: "LIVE" in chrome.find_element(By.ID, "status-worker_safety").text,
              "the status line")
        shot = ROOT / "out" / "web-dashboard.png"
        shot.parent.mkdir(exist_ok=True)
        assert chrome.save_screenshot(str(shot))
    finally:
        chrome.quit()


# --- a hostile network --------------------------------------------------------------------


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (reading any reply it sent first)."""
    try:
        while data := sock.recv(65536):
            del data
        return True
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def test_idle_and_half_open_connections_cannot_starve_the_station(tmp_path: Path) -> None:
    """Hundreds of connections that never finish a request, under a low open-file limit:
    the recording, the snapshots and the event log lose nothing, every socket is closed
    by the server (at once past the cap, at the header deadline below it), and the log
    holds no traceback."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this side needs 500 sockets
    record = tmp_path / "rec.mp4"
    log = tmp_path / "run.log"
    token = {"Authorization": "Bearer s3cret-token"}
    app = App(tmp_path, "--output", str(record), "--log_file", str(log), bind="0.0.0.0",
              env={"CORAL_MFG_HTTP_TOKEN": "s3cret-token"}, max_files=220)
    peers: list[socket.socket] = []
    try:
        app.ready(token)
        for i in range(500):
            peer = socket.create_connection(("127.0.0.1", app.port), timeout=60)
            if i % 5 == 0:  # half-open: headers begun, never ended
                peer.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            peer.setblocking(False)
            peers.append(peer)
        assert get(app.base + "/api/status", token)[0] in (200, 503)  # answered, not hung
        wait_for(lambda: all(_closed_by_server(p) for p in peers),
                 "the server to close every idle socket", timeout=120)
        state = json.loads(wait_for(lambda: (r := get(app.base + "/api/status", token))[0]
                                    == 200 and r, "the status")[2])
        assert state["connections"]["refused"] > 0  # over the cap: 503 at once
        assert state["connections"]["header_timeouts"] > 0  # under it: the header deadline
        wait_for(lambda: sum(e["type"] == "keepout_enter" for e in _events(app.events)) >= 2,
                 "two entries with their snapshots after the flood")
    finally:
        for peer in peers:
            peer.close()
        stderr = app.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert app.proc.returncode == 0, stderr
    text = log.read_text()
    assert "Traceback" not in text and "Too many open files" not in text, text[-3000:]
    assert len(text) < 20_000  # no flood
    assert "leaves room for" in text  # the cap was lowered to fit the limit, and said so
    summary = _events(app.events)[-1]
    outputs = summary["outputs"]
    for name in ("events", "recording", "snapshots"):
        assert outputs[name]["lost"] == 0 and outputs[name]["error"] is None, outputs
    assert outputs["snapshots"]["written"] == summary["keepout_violations"] >= 2
    assert all(Path(e["snapshot"]).is_file() for e in _events(app.events)
               if e["type"] == "keepout_enter")


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _mjpeg(port: int, stream: str, headers: str = "", rcvbuf: int | None = None
           ) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /video/{stream}.mjpg HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    return sock


def _read_all(sock: socket.socket) -> None:
    """A viewer that keeps up: reads until the connection ends."""
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass


def test_viewers_are_capped_and_a_stalled_one_is_dropped(tmp_path: Path) -> None:
    app = App(tmp_path, "--http_max_viewers", "2", "--log_file", str(tmp_path / "run.log"))
    held: list[socket.socket] = []
    try:
        app.ready()
        reading = _mjpeg(app.port, "visual_inspection")
        held.append(reading)
        assert b"200 OK" in reading.recv(4096)
        drain = threading.Thread(target=_read_all, args=(reading,), daemon=True)
        drain.start()
        stalled = _mjpeg(app.port, "worker_safety", rcvbuf=4096)  # never read again
        held.append(stalled)

        def status() -> dict[str, Any]:
            return dict(json.loads(get(app.base + "/api/status")[2]))

        wait_for(lambda: status()["viewers"] == 2, "two viewers")
        status_code, headers, body = get(app.base + "/video/worker_safety.mjpg")
        assert status_code == 503 and b"2 viewers already" in body
        assert headers.get("Connection") == "close"
        wait_for(lambda: status()["connections"]["viewers_dropped"] == 1,
                 "the stalled viewer to be dropped", timeout=180)
        wait_for(lambda: status()["viewers"] == 1, "its place to be free")
        reading.shutdown(socket.SHUT_RDWR)  # a viewer that leaves is not a drop
        drain.join(30)
        wait_for(lambda: status()["viewers"] == 0, "the viewer to be gone")
        assert status()["connections"]["viewers_dropped"] == 1
    finally:
        for sock in held:
            sock.close()
        stderr = app.stop()
    assert app.proc.returncode == 0, stderr
    log = (tmp_path / "run.log").read_text()
    assert log.count("stopped reading and was dropped") == 1
    assert "Traceback" not in log


def test_hostile_requests_get_short_answers_and_no_traceback(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    app = App(tmp_path, "--log_file", str(log), bind="0.0.0.0",
              env={"CORAL_MFG_HTTP_TOKEN": "s3cret-token"})
    try:
        app.ready({"Authorization": "Bearer s3cret-token"})
        for scheme in ("bearer", "BEARER", "Bearer"):  # the scheme is case-insensitive
            assert get(app.base + "/api/status",
                       {"Authorization": f"{scheme} s3cret-token"})[0] == 200
        for _ in range(20):  # far past the header limit, no token
            assert get(app.base + "/api/status", {"Authorization": "x" * 100_000})[0] == 400
        auth = {"Authorization": "Bearer s3cret-token"}
        for name in ("%00.jpg", "a%00b.jpg", "%0a.jpg"):
            assert get(app.base + "/snapshots/" + name, auth)[0] == 404
    finally:
        stderr = app.stop()
    assert app.proc.returncode == 0, stderr
    text = log.read_text()
    assert "Traceback" not in text and " ERROR " not in text, text
    assert text.count("malformed requests refused") == 1
    assert "x" * 100 not in text
