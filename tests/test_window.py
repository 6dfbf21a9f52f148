"""The window in a real X server (Xvfb) with Mesa's OpenGL: read the framebuffer back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from coral_mfg.core.geometry import letterbox
from coral_mfg.outputs.panel import STRIP_HEIGHT
from tests.conftest import ROOT, frames

ZONE = [(585, 390), (720, 335), (420, 205), (305, 235)]
W, H = 960, 540


def _free_display() -> int:
    for n in range(90, 200):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number")


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    """A virtual screen; the tests need Xvfb and Mesa (scripts/setup.sh --dev installs them)."""
    binary = shutil.which("Xvfb")
    assert binary, "Xvfb is not installed: run scripts/setup.sh --dev (apt package xvfb)"
    display = f":{_free_display()}"
    proc = subprocess.Popen([binary, display, "-screen", "0", "2400x1400x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        if Path(f"/tmp/.X11-unix/X{display[1:]}").exists():
            break
        time.sleep(0.1)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    try:
        yield display
    finally:
        proc.terminate()
        proc.wait(10)
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old


@pytest.fixture(scope="module")
def window_run(
    xvfb: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[np.ndarray, list[dict[str, Any]], str]:
    tmp = tmp_path_factory.mktemp("window")
    shot, events = tmp / "shot.png", tmp / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "coral_mfg", "--device", "cpu", "--no-realtime",
         "--max_frames", "20", "--screenshot", str(shot), "--events", str(events)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "DISPLAY": xvfb},
    )
    assert result.returncode == 0, result.stderr
    saved = cv2.imread(str(shot))
    assert saved is not None, f"no screenshot at {shot}"
    assert f"screenshot {shot}" in result.stdout + result.stderr  # the summary names it
    image = cv2.cvtColor(saved, cv2.COLOR_BGR2RGB)
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    return image, lines, result.stderr


def _last(events: list[dict[str, Any]], stream: str) -> dict[str, Any]:
    return [e for e in events if e["type"] == "frame" and e["stream"] == stream][-1]


def _is(pixel: np.ndarray, color: str) -> bool:
    r, g, b = (int(v) for v in pixel)
    if color == "red":
        return r > 180 and g < 80 and b < 80
    if color == "green":
        return g > 150 and r < 80 and b < 80
    raise ValueError(color)


def test_window_size_and_no_gl_errors(window_run: tuple[np.ndarray, list[Any], str]) -> None:
    image, _, stderr = window_run
    assert image.shape == (H + STRIP_HEIGHT, 2 * W, 3)  # each picture with its strip
    assert "0 GL errors" in stderr
    assert "GL error" not in stderr.replace("0 GL errors", "")


@pytest.mark.parametrize(("pane", "video"), [(0, "worker-zone-detection.mp4"),
                                             (1, "apple-conveyor.mp4")])
def test_both_panes_show_their_video(
    window_run: tuple[np.ndarray, list[dict[str, Any]], str], pane: int, video: str
) -> None:
    image, events, _ = window_run
    stream = "worker_safety" if pane == 0 else "visual_inspection"
    index = _last(events, stream)["frame"]
    expected = cv2.cvtColor(cv2.resize(frames(video)[index], (W, H)), cv2.COLOR_BGR2RGB)
    shown = image[:, pane * W:(pane + 1) * W]
    # compare the lower-left quarter, away from the HUD and most overlays
    region = (slice(H // 2, H), slice(0, W // 3))
    diff = np.abs(shown[region].astype(int) - expected[region].astype(int)).mean()
    assert diff < 12, diff


def test_keepout_polygon_is_red_where_the_csv_says(
    window_run: tuple[np.ndarray, list[Any], str]
) -> None:
    image, _, _ = window_run
    red = total = 0
    for (x0, y0), (x1, y1) in zip(ZONE, ZONE[1:] + ZONE[:1], strict=True):
        for t in np.linspace(0.1, 0.9, 9):
            x, y = round(x0 + t * (x1 - x0)), round(y0 + t * (y1 - y0))
            total += 1
            red += _is(image[y, x], "red")
    assert red >= 0.8 * total  # a person box may cross an edge
    # and not elsewhere: the zone's centre is plain floor
    cx, cy = (int(np.mean([p[0] for p in ZONE])), int(np.mean([p[1] for p in ZONE])))
    assert not _is(image[cy, cx], "red")


@pytest.mark.parametrize(("stream", "label", "dx"), [("worker_safety", "person", 0),
                                                     ("visual_inspection", "apple", W)])
def test_boxes_are_drawn_where_the_event_log_says(
    window_run: tuple[np.ndarray, list[dict[str, Any]], str], stream: str, label: str, dx: int
) -> None:
    image, events, _ = window_run
    objects = [o for o in _last(events, stream)["objects"] if o["label"] == label]
    assert objects, f"no {label} on the last {stream} frame"
    for o in objects:
        x1, y1, x2, y2 = o["box"]
        colour = "red" if o.get("keepout") or o.get("grade") == "rotten_apple" else "green"
        # the middle of the left and bottom edges, drawn 3 px thick on the box line
        points = [(x1 + dx, (y1 + y2) // 2), ((x1 + x2) // 2 + dx, min(y2, H - 2))]
        for x, y in points:
            patch = image[max(y - 1, 0):y + 2, max(x - 1, dx):x + 2].reshape(-1, 3)
            assert any(_is(p, colour) for p in patch), (stream, o, (x, y), patch)


def test_text_is_present(window_run: tuple[np.ndarray, list[Any], str]) -> None:
    image, _, _ = window_run
    for dx in (0, W):
        strip = image[H:H + STRIP_HEIGHT, dx + 8:dx + 400]  # under the picture, never on it
        white = np.all(strip > 200, axis=2).sum()
        dark = np.all(strip < 40, axis=2).sum()
        assert white > 300 and dark > 3000, (white, dark)  # glyphs on the strip's dark panel


def test_resize_keeps_the_aspect_ratio(xvfb: str) -> None:
    import glfw

    from coral_mfg.render.window import Window

    window = Window((W, H), visible=True)
    try:
        image = frames("apple-conveyor.mp4")[20]
        window.set_pane(0, image)
        window.set_pane(1, image)
        from coral_mfg.render.scene import Layer

        window.draw(Layer())
        native = window.read_pixels()
        glfw.set_window_size(window.handle, 1000, 1000)
        for _ in range(50):
            glfw.poll_events()
            if window.framebuffer_size() == (1000, 1000):
                break
            time.sleep(0.02)
        assert window.framebuffer_size() == (1000, 1000)
        window.swap()  # the driver resizes the back buffer at a swap
        window.draw(Layer())
        shot = window.read_pixels()
        cell = H + STRIP_HEIGHT
        x, y, w, h = letterbox((1000, 1000), (2 * W, cell))
        assert abs(w / h - (2 * W) / cell) < 0.01
        assert (x, w) == (0, 1000) and y > 250
        assert shot[:y - 1].max() == 0 and shot[y + h + 1:].max() == 0  # black bars
        content = shot[y:y + h, x:x + w]
        back = cv2.resize(content, (2 * W, cell), interpolation=cv2.INTER_AREA)
        ref = cv2.resize(cv2.resize(native, (w, h), interpolation=cv2.INTER_AREA),
                         (2 * W, cell), interpolation=cv2.INTER_AREA)
        assert np.abs(back.astype(int) - ref.astype(int)).mean() < 6  # same picture, unstretched
        assert window.gl_errors == 0
    finally:
        window.close()


@pytest.mark.parametrize(
    ("framebuffer", "expected"),
    [
        ((1920, 540), (0, 0, 1920, 540)),
        ((1000, 1000), (0, 359, 1000, 281)),
        ((3840, 540), (960, 0, 1920, 540)),
        ((960, 270), (0, 0, 960, 270)),
    ],
)
def test_letterbox(framebuffer: tuple[int, int], expected: tuple[int, int, int, int]) -> None:
    assert letterbox(framebuffer, (1920, 540)) == expected


def test_keys_pause_hud_fullscreen_screenshot_and_quit(
    xvfb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drive the real app's window with key presses, as a user would."""
    import threading

    import glfw

    from coral_mfg.config.flags import resolve_settings, run_parser
    from coral_mfg.render.loop import WindowApp
    from coral_mfg.render.window import DisplaySink
    from coral_mfg.runtime.builder import build_pipeline

    monkeypatch.chdir(tmp_path)
    before = set(threading.enumerate())  # earlier tests may leave abandoned readers behind
    settings = resolve_settings(run_parser().parse_args(["--device", "cpu"]))
    display = DisplaySink()
    pipeline = build_pipeline(settings, extra_sinks=[display])
    app = WindowApp(settings, pipeline, display)
    seen: dict[str, Any] = {}

    def press(key: int) -> None:
        app.window._on_key(None, key, 0, glfw.PRESS, 0)
        glfw.post_empty_event()

    def until(condition: Any) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.02)

    def idle() -> bool:
        with pipeline.ctx.cond:
            return not any(u.state.in_flight for u in pipeline.units.values())

    def script() -> None:
        try:
            until(lambda: pipeline.units["worker_safety"].processor.processed >= 5)
            press(glfw.KEY_SPACE)
            until(lambda: pipeline.paused.is_set() and idle())
            seen["paused_at"] = pipeline.units["worker_safety"].processor.processed
            # every camera says it is paused: its checks are unknown, never clear
            status = pipeline.assemble_status()
            seen["states"] = {s.state for s in status.streams}
            seen["occupancy"] = status.stream("worker_safety").occupancy("walkway")
            seen["panel"] = app.panel("worker_safety").health
            time.sleep(1.0)  # a whole second in which nothing may be processed
            seen["still"] = pipeline.units["worker_safety"].processor.processed
            press(glfw.KEY_SPACE)
            until(lambda: pipeline.units["worker_safety"].processor.processed > seen["still"])
            until(lambda: pipeline.assemble_status().stream("worker_safety").live)
            press(glfw.KEY_H)
            until(lambda: app.show_hud)
            press(glfw.KEY_F)
            until(lambda: app.window.fullscreen)
            press(glfw.KEY_S)
            until(lambda: list(tmp_path.glob("coral-mfg-*.png")))
        finally:
            seen["quit_at"] = time.monotonic()
            press(glfw.KEY_Q)

    stop = threading.Event()
    driver = threading.Thread(target=script)
    pipeline.start()
    driver.start()
    try:
        app.run(stop)
        returned = time.monotonic()
    finally:
        pipeline.close()
        closed = time.monotonic()
        app.finish()
        driver.join(10)
    assert seen["still"] == seen["paused_at"]  # nothing processed while paused
    # and processing resumed
    assert pipeline.units["worker_safety"].processor.processed > seen["still"]
    assert seen["states"] == {"paused"} and seen["occupancy"] is None
    assert seen["panel"] == "paused"
    assert app.show_hud is True  # h: the inference details instead of the shift's totals
    assert app.window.fullscreen is True
    assert list(tmp_path.glob("coral-mfg-*.png"))  # 's' saved a screenshot
    assert returned - seen["quit_at"] < 2.0 and closed - seen["quit_at"] < 2.0
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert app.window.gl_errors == 0


def test_quitting_with_q_writes_the_verdicts_of_objects_in_view(
    xvfb: str, tmp_path: Path
) -> None:
    """'q' with an apple in view: its verdict is written, and the summary counts what the
    event log says."""
    import threading

    import glfw

    from coral_mfg.config.flags import resolve_settings, run_parser
    from coral_mfg.core.results import InspectedObject
    from coral_mfg.render.loop import WindowApp
    from coral_mfg.render.window import DisplaySink
    from coral_mfg.runtime.builder import build_pipeline
    from tests.test_exit_paths import assert_counts_are_events

    events = tmp_path / "events.jsonl"
    settings = resolve_settings(run_parser().parse_args(
        ["--device", "cpu", "--events", str(events)]))
    display = DisplaySink()
    pipeline = build_pipeline(settings, extra_sinks=[display])
    app = WindowApp(settings, pipeline, display)

    history: list[set[int]] = []  # graded apples on each newly shown frame
    last = [-1]

    def apple_in_view() -> bool:
        """The same graded apple on the newest four frames shown: counted, in view."""
        shown = display.snapshot().get("visual_inspection")
        if shown is None:
            return False
        if shown[0] != last[0]:
            last[0] = shown[0]
            history.append({o.track for o in shown[1].objects
                            if isinstance(o, InspectedObject) and o.grade and not o.predicted})
        return len(history) >= 4 and bool(set.intersection(*history[-4:]))

    def script() -> None:
        deadline = time.monotonic() + 120
        while not apple_in_view() and time.monotonic() < deadline:
            time.sleep(0.02)
        app.window._on_key(None, glfw.KEY_Q, 0, glfw.PRESS, 0)
        glfw.post_empty_event()

    driver = threading.Thread(target=script)
    pipeline.start()
    driver.start()
    try:
        app.run(threading.Event())
    finally:
        pipeline.close()
        app.finish()
        driver.join(10)
    logged = [json.loads(x) for x in events.read_text().splitlines()]
    assert assert_counts_are_events(logged)
    assert logged[-2]["type"] == "graded"


def test_lost_source_shows_no_signal(xvfb: str) -> None:
    """A camera that dies and cannot be reopened: its pane says NO SIGNAL and why."""
    import threading

    from coral_mfg.capture.sources import VideoSource
    from coral_mfg.config.flags import resolve_settings, run_parser
    from coral_mfg.core.errors import UserError
    from coral_mfg.core.frame import Frame
    from coral_mfg.render.loop import WindowApp
    from coral_mfg.render.window import DisplaySink
    from coral_mfg.runtime.builder import build_pipeline
    from tests.test_sources import FakeSource

    opened: list[int] = []

    def opener() -> tuple[VideoSource, Frame | None]:
        opened.append(1)
        if len(opened) > 1:
            raise UserError("cannot open stream fake://line-3: check the URL")
        return FakeSource("ends", good=5), None

    settings = resolve_settings(run_parser().parse_args(
        ["--device", "cpu", "--visual_inspection_input", "fake://line-3"]))
    display = DisplaySink()
    pipeline = build_pipeline(settings, extra_sinks=[display],
                              openers={"visual_inspection": opener})
    app = WindowApp(settings, pipeline, display)
    stop = threading.Event()
    threading.Timer(3.0, stop.set).start()
    pipeline.start()
    try:
        app.run(stop)
        app.render()
        image = app.window.read_pixels()
        shown = pipeline.assemble_status()
        status = shown.stream("visual_inspection").reason
    finally:
        pipeline.close()
        app.finish()
    assert status is not None and status.startswith("NO SIGNAL: cannot open stream")
    right = image[:, W:]
    centre = right[H // 2 - 80:H // 2 + 40, 200:W - 200]
    red = (centre[..., 0] > 200) & (centre[..., 1] < 120) & (centre[..., 2] < 120)
    assert red.sum() > 500  # the big NO SIGNAL title
    assert shown.stream("worker_safety").reason is None


def test_zone_editor_drag_insert_delete_new_and_save(
    xvfb: str, tmp_path: Path
) -> None:
    """Drive the editor with glfw input events: the saved file and the live zone follow."""
    import tomllib

    import glfw

    from coral_mfg.config.flags import resolve_settings, run_parser
    from coral_mfg.render.loop import WindowApp
    from coral_mfg.render.window import DisplaySink
    from coral_mfg.runtime.builder import build_pipeline

    cfg = tmp_path / "site.toml"
    cfg.write_text(
        '# plant settings\nwidth = 960\nheight = 540\nworker_threshold = 0.4\n'
        '[[safety.zones]]\nname = "press-1"\n'
        'points = [[585, 390], [720, 335], [420, 205], [305, 235]]\nenter_frames = 2\n'
    )
    settings = resolve_settings(run_parser().parse_args(
        ["--config", str(cfg), "--device", "cpu", "--max_frames", "400"]))
    display = DisplaySink()
    pipeline = build_pipeline(settings, extra_sinks=[display])
    app = WindowApp(settings, pipeline, display)
    win = app.window
    errors: list[BaseException] = []

    def step() -> None:
        glfw.poll_events()
        app.handle_keys()
        app.handle_mouse()

    def key(k: int, mods: int = 0) -> None:
        win._on_key(None, k, 0, glfw.PRESS, mods)
        step()

    def at(x: float, y: float) -> tuple[float, float]:
        """Window coordinates of content point (x, y): editing enlarges the safety camera,
        so its 960x612 cell sits in the middle of the 1920x612 window."""
        vx, _, vw, _ = win.viewport()
        return (vx + x * vw / win.content[0], y)

    def click(x: float, y: float, button: int = glfw.MOUSE_BUTTON_LEFT) -> None:
        glfw.set_cursor_pos(win.handle, *at(x, y))
        win._on_mouse_button(None, button, glfw.PRESS, 0)
        step()

    def release() -> None:
        win._on_mouse_button(None, glfw.MOUSE_BUTTON_LEFT, glfw.RELEASE, 0)
        step()

    def naming() -> str | None:
        return app.editor.naming if app.editor is not None else None

    pipeline.start()
    try:
        assert win.to_content(585, 390) == pytest.approx((585, 390))
        key(glfw.KEY_E)
        assert app.editor is not None and app.editor.active
        assert app.focused == "worker_safety" and win.content == (W, H + STRIP_HEIGHT)
        assert win.to_content(*at(585, 390)) == pytest.approx((585, 390))
        store = pipeline.zone_store("worker_safety")
        assert store is not None
        # drag vertex 0 from (585, 390) to (600, 420)
        click(585, 390)
        glfw.set_cursor_pos(win.handle, *at(600, 420))
        win._on_cursor(None, *at(600, 420))
        step()
        release()
        live = store.zones[0].points.tolist()
        assert live[0] == [600, 420]
        # click the middle of edge 1-2 (720,335)-(420,205): a vertex is inserted there
        click(570, 270)
        release()
        assert len(store.zones[0].points) == 5
        assert store.zones[0].points[2].tolist() == [570, 270]
        # right-click it away again
        click(570, 270, glfw.MOUSE_BUTTON_RIGHT)
        assert len(store.zones[0].points) == 4
        # a new zone asks for its name at once: the name typed replaces the proposed one
        key(glfw.KEY_N)
        assert naming() == "zone-2"
        for char in "walkway":
            win._on_char(None, ord(char))
        key(glfw.KEY_ENTER)
        assert [z.name for z in store.zones] == ["press-1", "walkway"]
        # r renames the zone selected; Esc keeps its name
        key(glfw.KEY_R)
        win._on_char(None, ord("x"))
        key(glfw.KEY_ESCAPE)
        assert naming() is None
        assert [z.name for z in store.zones] == ["press-1", "walkway"]
        key(glfw.KEY_TAB)
        assert app.editor is not None and app.editor.zone is not None
        assert app.editor.zone.name == "press-1"
        app.render()
        shot = win.read_pixels()
        handle_x = round(at(600, 420)[0])
        # while editing, the keys are said on the camera's strip, under the picture
        assert "Ctrl+S: save" in "".join(s.text for s in app.panel("worker_safety").lines[1])
        key(glfw.KEY_S, glfw.MOD_CONTROL)
        # a drag left unsaved is dropped on leaving: outside the editor the zones in force
        # are the saved ones
        saved_points = store.zones[0].points.tolist()
        click(600, 420)
        glfw.set_cursor_pos(win.handle, *at(650, 450))
        win._on_cursor(None, *at(650, 450))
        step()
        release()
        assert store.zones[0].points.tolist() != saved_points
        key(glfw.KEY_ESCAPE)  # leaves edit mode, does not quit
        assert app.editor is None and not app.quit
        assert store.zones[0].points.tolist() == saved_points
        assert "unsaved zone changes dropped" in app.message
    except BaseException as exc:  # keep the teardown below
        errors.append(exc)
    finally:
        pipeline.close()
        app.finish()
    if errors:
        raise errors[0]
    text = cfg.read_text()
    saved = tomllib.loads(text)
    assert saved["width"] == 960 and saved["worker_threshold"] == 0.4  # other settings kept
    assert text.startswith("# plant settings\n")  # and its comments
    assert "points = [[600, 420], [720, 335], [420, 205], [305, 235]]\n" in text  # one line
    zones = saved["safety"]["zones"]
    assert [z["name"] for z in zones] == ["press-1", "walkway"]
    assert zones[0]["points"] == [[600, 420], [720, 335], [420, 205], [305, 235]]
    assert zones[0]["enter_frames"] == 2  # its own settings kept too
    # the handles of the selected zone are drawn (white squares at its vertices)
    assert (shot[420, handle_x - 6] > 200).all() and (shot[420, handle_x + 6] > 200).all()
    # and the saved file is a valid config that loads the same zones
    from coral_mfg.runtime.zone_watch import zones_of

    again = resolve_settings(run_parser().parse_args(["--config", str(cfg)]))
    assert zones_of(again, again.camera_list()[0], (0, 0, W, H))[2][0].points.tolist() == \
        zones[0]["points"]


def test_csv_zone_is_saved_back_to_its_csv(xvfb: str, tmp_path: Path) -> None:
    import glfw

    from coral_mfg.config.flags import resolve_settings, run_parser
    from coral_mfg.render.loop import WindowApp
    from coral_mfg.render.window import DisplaySink
    from coral_mfg.runtime.builder import build_pipeline

    csv = tmp_path / "zone.csv"
    csv.write_text("x,y\n585,390\n720,335\n420,205\n305,235\n")
    settings = resolve_settings(run_parser().parse_args(
        ["--keepout_points_path", str(csv), "--device", "cpu"]))
    display = DisplaySink()
    pipeline = build_pipeline(settings, extra_sinks=[display])
    app = WindowApp(settings, pipeline, display)
    try:
        app.enter_editor()
        editor = app.editor
        assert editor is not None
        editor.press(305, 235)
        editor.move(300, 250)
        editor.release()
        editor.new_zone()  # refused: a CSV holds one zone
        assert "CSV file holds one zone" in editor.message
        app.window._on_key(None, glfw.KEY_S, 0, glfw.PRESS, glfw.MOD_CONTROL)
        app.handle_keys()
    finally:
        pipeline.close()
        app.finish()
    assert csv.read_text() == "x,y\n585,390\n720,335\n420,205\n300,250\n"


def test_the_window_editor_saves_the_zones_in_force_over_a_refused_file(
        xvfb: str, tmp_path: Path) -> None:
    """A hand edit the station refused (2 points): Ctrl+S in the window's editor, with the
    zones unchanged, writes the zones in force over it, and the refusal ends."""
    from coral_mfg.config.flags import resolve_settings, run_parser
    from coral_mfg.config.settings import read_config_file
    from coral_mfg.render.loop import WindowApp
    from coral_mfg.render.window import DisplaySink
    from coral_mfg.runtime.builder import build_pipeline

    cfg = tmp_path / "site.toml"
    good = ('[[safety.zones]]\nname = "press-1"\n'
            'points = [[585, 390], [720, 335], [420, 205], [305, 235]]\n')
    cfg.write_text(good)
    settings = resolve_settings(run_parser().parse_args(["--config", str(cfg), "--device",
                                                         "cpu"]))
    display = DisplaySink()
    pipeline = build_pipeline(settings, extra_sinks=[display])
    app = WindowApp(settings, pipeline, display)
    try:
        store, watcher = pipeline.zone_store("worker_safety"), pipeline.zone_watcher
        assert store is not None and watcher is not None
        cfg.write_text(good.replace(", [420, 205], [305, 235]", ""))
        watcher.check_now()
        assert store.error is not None and "3 points" in store.error
        app.enter_editor()
        editor = app.editor
        assert editor is not None
        assert editor.save() == cfg  # nothing edited: still written, the file was refused
        assert store.error is None
    finally:
        pipeline.close()
        app.finish()
    read_config_file(cfg)  # whole again
    assert "[[585, 390], [720, 335], [420, 205], [305, 235]]" in cfg.read_text()


def test_window_close_stops_cleanly(xvfb: str) -> None:
    """Closing the window (as a window manager's close button does) ends the run."""
    import threading

    import glfw

    from coral_mfg.config.flags import resolve_settings, run_parser
    from coral_mfg.render.loop import WindowApp
    from coral_mfg.render.window import DisplaySink
    from coral_mfg.runtime.builder import build_pipeline

    before = set(threading.enumerate())
    settings = resolve_settings(run_parser().parse_args(["--device", "cpu"]))
    display = DisplaySink()
    pipeline = build_pipeline(settings, extra_sinks=[display])
    app = WindowApp(settings, pipeline, display)
    closed: dict[str, float] = {}

    def close_soon() -> None:
        deadline = time.monotonic() + 60
        worker = pipeline.units["worker_safety"].processor
        while worker.processed == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        closed["at"] = time.monotonic()
        glfw.set_window_should_close(app.window.handle, True)  # callable from any thread
        glfw.post_empty_event()

    pipeline.start()
    closer = threading.Thread(target=close_soon)
    closer.start()
    try:
        app.run(threading.Event())
    finally:
        pipeline.close()
        done = time.monotonic()
        app.finish()
        closer.join(5)
    assert done - closed["at"] < 2.0
    assert pipeline.units["worker_safety"].processor.processed > 0
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]


def test_window_fits_a_small_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a 1280x720 screen the 1920x612 window shrinks to fit, keeping its shape."""
    import glfw

    from coral_mfg.render.window import Window

    binary = shutil.which("Xvfb")
    assert binary, "Xvfb is not installed: run scripts/setup.sh --dev (apt package xvfb)"
    display = f":{_free_display()}"
    proc = subprocess.Popen([binary, display, "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not Path(f"/tmp/.X11-unix/X{display[1:]}").exists():
            assert time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.1)
        monkeypatch.setenv("DISPLAY", display)
        window = Window((W, H), visible=True)
        try:
            w, h = glfw.get_window_size(window.handle)
            x, y = glfw.get_window_pos(window.handle)
        finally:
            window.close()
    finally:
        proc.terminate()
        proc.wait(10)
    assert (w, h) == (1280, 408)  # 2W x (H + strip) scaled by 1280 / 1920
    assert x >= 0 and y >= 0 and x + w <= 1280 and y + h <= 720


# --- a station of four cameras ----------------------------------------------------------------

FOUR = (("press", "worker-zone-detection.mp4", ["safety"]),
        ("belt", "apple-conveyor.mp4", ["inspection"]),
        ("dock", "worker-zone-detection.mp4", ["safety"]),
        ("packing", "apple-conveyor.mp4", ["inspection"]))


def _four_cameras(tmp: Path) -> Path:
    from tests.test_cameras import _camera, _config

    return _config(tmp, {name: _camera(clip, roles) for name, clip, roles in FOUR})


def test_four_cameras_fill_a_two_by_two_grid(xvfb: str, tmp_path: Path) -> None:
    """A screenshot in which every pane shows its camera's video, where the grid puts it."""
    shot, events = tmp_path / "shot.png", tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "coral_mfg", "--config", str(_four_cameras(tmp_path)),
         "--device", "cpu", "--no-realtime", "--max_frames", "20", "--screenshot", str(shot),
         "--events", str(events)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "DISPLAY": xvfb})
    assert result.returncode == 0, result.stderr
    saved = cv2.imread(str(shot))
    assert saved is not None, f"no screenshot at {shot}"
    image = cv2.cvtColor(saved, cv2.COLOR_BGR2RGB)
    cell = H + STRIP_HEIGHT
    assert image.shape == (2 * cell, 2 * W, 3)
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    for i, (name, clip, _) in enumerate(FOUR):
        index = _last(lines, name)["frame"]
        expected = cv2.cvtColor(cv2.resize(frames(clip)[index], (W, H)), cv2.COLOR_BGR2RGB)
        x0, y0 = (i % 2) * W, (i // 2) * cell
        shown = image[y0:y0 + H, x0:x0 + W]
        region = (slice(H // 2, H), slice(0, W // 3))  # away from the HUD and most overlays
        diff = np.abs(shown[region].astype(int) - expected[region].astype(int)).mean()
        assert diff < 12, (name, diff)
        strip = image[y0 + H:y0 + cell, x0 + 8:x0 + 400].astype(int)
        glyphs = (np.abs(strip - strip[-1, -1]).max(axis=2) > 80).sum()  # off the background
        assert glyphs > 300, (name, glyphs)  # each camera has its strip, with words


def test_a_number_key_or_a_click_enlarges_one_camera(xvfb: str, tmp_path: Path) -> None:
    import glfw

    from coral_mfg.config.flags import resolve_settings, run_parser
    from coral_mfg.render.loop import WindowApp
    from coral_mfg.render.window import DisplaySink
    from coral_mfg.runtime.builder import build_pipeline

    settings = resolve_settings(run_parser().parse_args(
        ["--config", str(_four_cameras(tmp_path)), "--device", "cpu"]))
    display = DisplaySink()
    pipeline = build_pipeline(settings, extra_sinks=[display])
    app = WindowApp(settings, pipeline, display)
    win = app.window

    def key(k: int) -> None:
        win._on_key(None, k, 0, glfw.PRESS, 0)
        app.handle_keys()

    def click(x: float, y: float) -> None:
        """A click at content point (x, y) of the grid (the window shows it 1:1)."""
        glfw.set_cursor_pos(win.handle, x, y)
        win._on_mouse_button(None, glfw.MOUSE_BUTTON_LEFT, glfw.PRESS, 0)
        app.handle_mouse()

    try:
        cell = H + STRIP_HEIGHT
        assert win.content == (2 * W, 2 * cell) and app.focused is None
        assert win.framebuffer_size() == (2 * W, 2 * cell)
        key(glfw.KEY_3)
        assert app.focused == "dock" and win.content == (W, cell)
        key(glfw.KEY_3)  # the same key again: the grid
        assert app.focused is None and win.content == (2 * W, 2 * cell)
        key(glfw.KEY_2)
        key(glfw.KEY_0)
        assert app.focused is None
        click(1.5 * W, 0.5 * H)  # top right: the second camera
        assert app.focused == "belt"
        click(W, H)  # anywhere on the enlarged camera: the grid again
        assert app.focused is None
        key(glfw.KEY_9)  # no ninth camera: the grid stays
        assert app.focused is None
        key(glfw.KEY_E)  # editing zones enlarges the first safety camera
        assert app.editor is not None and app.focused == "press"
        key(glfw.KEY_ESCAPE)
        assert app.editor is None and not app.quit
        key(glfw.KEY_2)
        key(glfw.KEY_E)  # an inspection camera has no zones: said, not edited
        assert app.editor is None and "no keep-out zones" in app.message
    finally:
        pipeline.close()
        app.finish()


def test_a_person_in_a_zone_shows_the_red_strip_and_border(xvfb: str, tmp_path: Path) -> None:
    """The shipped config's walkway, entered by the sample worker by frame 60: the
    window's last frame has the red strip naming the zone and a red border round the
    picture; the other camera stays calm."""
    shot, events = tmp_path / "shot.png", tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "coral_mfg", "--device", "cpu", "--no-realtime",
         "--max_frames", "60", "--screenshot", str(shot), "--events", str(events),
         "--no-history"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "DISPLAY": xvfb})
    assert result.returncode == 0, result.stderr
    last = _last([json.loads(x) for x in events.read_text().splitlines()], "worker_safety")
    assert any("walkway" in o["zones"] for o in last["objects"])
    saved = cv2.imread(str(shot))
    assert saved is not None
    image = cv2.cvtColor(saved, cv2.COLOR_BGR2RGB)
    (ROOT / "out" / "screenshots").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(ROOT / "out" / "screenshots" / "window-alarm.png"), saved)

    def red(area: np.ndarray) -> float:
        r, g, b = (area[..., i].astype(np.int32) for i in range(3))
        return float(((r > 180) & (g < 80) & (b < 80)).mean())

    worker, apples = image[:, :W], image[:, W:]
    assert red(worker[H + 4:, :]) > 0.5  # the strip
    assert red(worker[: H, :3]) > 0.9 and red(worker[: H, -3:]) > 0.9  # the border
    assert red(apples[H + 4:, :]) < 0.1 and red(apples[: H, :3]) < 0.1
