"""Shared fixtures: the real assets (fetched once from the mirror) and real frames."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

from coral_mfg.config.assets import ENV_MIRROR, app_home, fetch_all, load_manifest, usable_pairs

ROOT = Path(__file__).resolve().parents[1]


def mirror() -> str | None:
    return os.environ.get(ENV_MIRROR) or None


@pytest.fixture(scope="session", autouse=True)
def assets() -> Path:
    """The project's models/ and videos/, filled and verified before any test."""
    manifest = load_manifest()
    home = app_home()
    fetch_all(manifest, home, mirror(), download=mirror() is None)
    assert usable_pairs(manifest, home), (
        f"no usable detector+classifier in {home}; set {ENV_MIRROR} to a mirror folder"
    )
    return home


def model(name: str) -> Path:
    return app_home() / "models" / name


def video(name: str) -> Path:
    return app_home() / "videos" / name


def image(name: str) -> Path:
    return app_home() / "images" / name


@cache
def _frames(path: str) -> tuple[np.ndarray, ...]:
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return tuple(frames)


def frames(name: str) -> tuple[np.ndarray, ...]:
    """Every decoded frame of a sample video (decoded once per test session)."""
    return _frames(str(video(name)))


def iou(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> float:
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture
def app_home_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty application home, for tests that fetch or write assets."""
    monkeypatch.setenv("CORAL_MFG_HOME", str(tmp_path))
    yield tmp_path


@pytest.fixture(scope="session")
def fake_libedgetpu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the stand-in libedgetpu.so.1 (tests/fake_edgetpu/): needs a C compiler.

    Beside it, ``right_answer.bin``: the classifier's CPU output for the known-answer
    crop, which the stand-in replays (``FAKE_EDGETPU_OUTPUT``) to answer as a
    working Edge TPU does.
    """
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to build the stand-in Edge TPU runtime"
    out = tmp_path_factory.mktemp("libedgetpu")
    src = ROOT / "tests" / "fake_edgetpu" / "fake_edgetpu.c"
    subprocess.run([cc, "-shared", "-fPIC", "-Wall", "-Werror", "-o",
                    str(out / "libedgetpu.so.1"), str(src)], check=True)
    (out / "right_answer.bin").write_bytes(known_answer_bytes())
    return out


def known_answer_bytes() -> bytes:
    """The CPU classifier's raw output for the crop the Edge TPU probe checks with."""
    from ai_edge_litert.interpreter import Interpreter

    from coral_mfg.inference import adapters
    from coral_mfg.inference.startup import KNOWN_ANSWER_CROP

    interpreter = Interpreter(model_path=str(model("classifier.tflite")))
    interpreter.allocate_tensors()
    width, height = adapters.input_size(interpreter)
    rgb = np.empty((height, width, 3), np.uint8)
    adapters.resize_rgb(np.asarray(cv2.imread(str(KNOWN_ANSWER_CROP)), np.uint8), rgb)
    adapters.write_rgb(interpreter, rgb)
    interpreter.invoke()
    index = interpreter.get_output_details()[0]["index"]
    return bytes(interpreter.get_tensor(index).tobytes())


def jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole records of a JSON-lines file, which may still be being written.

    A reader can catch an append half-copied into the page cache, so an unterminated
    last line is left for the next read; tests of what a crash leaves check for it
    with :func:`assert_whole_lines`."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line]


def assert_whole_lines(path: Path) -> None:
    """Every line ends: nothing half-written was left behind."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends in a partial line: {data[-80:]!r}"


def wait_for(check: Callable[[], Any], what: str = "a condition", timeout: float = 90.0,
             poll: float = 0.1) -> Any:
    """Poll ``check`` until it returns something true, which is returned; fail at the
    deadline. Tests wait for conditions, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chromium(profile: Path, size: str = "1280,900") -> WebDriver:
    """Debian's Chromium, headless, driven by Debian's chromedriver, with a profile of its
    own and nothing that reaches past this machine; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver, "Debian's chromium and chromium-driver are needed"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                f"--window-size={size}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)
