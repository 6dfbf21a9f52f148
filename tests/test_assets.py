"""fetch-assets against a real HTTP server on 127.0.0.1 and against a mirror folder."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral_mfg.commands.cli import main
from coral_mfg.config.assets import (
    digests_of,
    fetch_all,
    fetch_asset,
    load_manifest,
    usable_pairs,
    verify,
)
from tests.conftest import ROOT

REQUIRED = [
    "ssd_mobilenet_v1_coco_quant_detect.tflite",
    "classifier.tflite",
    "coco_labels.txt",
    "classifier_labels.txt",
]


@pytest.fixture
def mirror_copy(tmp_path: Path) -> Path:
    """A copy of the project's verified assets laid out as a mirror."""
    root = tmp_path / "mirror"
    for sub in ("models", "videos"):
        (root / sub).mkdir(parents=True)
    manifest = load_manifest()
    for name in [*REQUIRED, "classifier_edgetpu.tflite", "apple-conveyor.mp4"]:
        asset = manifest.asset(name)
        shutil.copy(ROOT / asset.subdir / name, root / asset.subdir / name)
    return root


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_mirror(mirror_copy: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(mirror_copy))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _leftovers(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.name.endswith(".part")]


@pytest.mark.parametrize("kind", ["http", "folder"])
def test_fetch_from_mirror(
    kind: str, http_mirror: str, mirror_copy: Path, app_home_tmp: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = http_mirror if kind == "http" else str(mirror_copy)
    rc = main(["fetch-assets", "--from", source, "--offline"])
    out = capsys.readouterr().out
    assert rc == 0
    manifest = load_manifest()
    for name in REQUIRED:
        path = app_home_tmp / manifest.asset(name).subdir / name
        assert verify(manifest.asset(name), path)
        assert f"fetched  models/{name} from {source}" in out
    # MobileDet is not in this mirror: reported in one line, the fallback pair is usable
    assert "MISSING  models/ssdlite_mobiledet" not in out
    assert "SSDLite MobileDet not installed: using SSD MobileNet v1" in out
    assert "ready: detector ssd_mobilenet_v1" in out
    assert not _leftovers(app_home_tmp)
    # a second run finds everything in place
    assert main(["fetch-assets", "--from", source, "--offline"]) == 0
    again = capsys.readouterr().out
    assert re.search(r"^ok       \d+ file\(s\) already present, verified$", again, re.MULTILINE)


def test_corrupted_file_is_rejected_and_nothing_partial_is_left(
    http_mirror: str, mirror_copy: Path, app_home_tmp: Path
) -> None:
    corrupt = mirror_copy / "models" / "classifier.tflite"
    data = bytearray(corrupt.read_bytes())
    data[1000] ^= 0xFF  # same size, one flipped byte
    corrupt.write_bytes(bytes(data))
    manifest = load_manifest()
    result = fetch_asset(manifest.asset("classifier.tflite"), app_home_tmp, http_mirror, False)
    assert result.status == "missing"
    assert "digest mismatch, rejected" in result.detail
    assert not (app_home_tmp / "models" / "classifier.tflite").exists()
    assert not _leftovers(app_home_tmp)


def test_corrupt_local_copy_is_replaced(mirror_copy: Path, app_home_tmp: Path) -> None:
    manifest = load_manifest()
    target = app_home_tmp / "models" / "classifier_labels.txt"
    target.parent.mkdir(parents=True)
    target.write_text("0 pear\n")
    result = fetch_asset(manifest.asset("classifier_labels.txt"), app_home_tmp,
                         str(mirror_copy), False)
    assert result.status == "fetched"
    assert verify(manifest.asset("classifier_labels.txt"), target)


def test_no_usable_pair_exits_non_zero(
    tmp_path: Path, app_home_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    rc = main(["fetch-assets", "--from", str(empty), "--offline"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "MISSING  models/classifier.tflite: not in mirror" in captured.out
    assert "no usable detector + classifier pair" in captured.err
    assert not usable_pairs(load_manifest(), app_home_tmp)


def test_unreachable_url_is_reported_not_raised(app_home_tmp: Path) -> None:
    manifest = load_manifest()
    # nothing listens on port 9 (discard) of loopback
    result = fetch_asset(manifest.asset("coco_labels.txt"), app_home_tmp,
                         "http://127.0.0.1:9", False)
    assert result.status == "missing"
    assert "unreachable" in result.detail


def test_archive_member_is_extracted_and_verified(
    tmp_path: Path, app_home_tmp: Path
) -> None:
    """The official SSD MobileNet v1 comes in a zip; serve one and fetch through the manifest."""
    src = ROOT / "models" / "ssd_mobilenet_v1_coco_quant_detect.tflite"
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "model.zip", "w") as zf:
        zf.write(src, "detect.tflite")
        zf.writestr("labelmap.txt", "???\nperson\n")
    handler = functools.partial(_Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        size, sha, blob = digests_of(src)
        text = f"""
[[detectors]]
name = "d"
cpu = "ssd_mobilenet_v1_coco_quant_detect.tflite"
labels = "coco_labels.txt"
[classifier]
name = "c"
cpu = "classifier.tflite"
labels = "classifier_labels.txt"
[samples]
worker_safety = "a.mp4"
visual_inspection = "b.mp4"
[[assets]]
name = "ssd_mobilenet_v1_coco_quant_detect.tflite"
kind = "model"
url = "http://127.0.0.1:{server.server_address[1]}/model.zip"
archive_member = "detect.tflite"
accept = [{{ size = {size}, sha256 = "{sha}", git_blob = "{blob}" }}]
"""
        results = fetch_all(load_manifest(text), app_home_tmp, None, download=True)
    finally:
        server.shutdown()
        server.server_close()
    assert [r.status for r in results] == ["fetched"]
    assert digests_of(app_home_tmp / "models" / src.name) == (size, sha, blob)


def test_manifest_matches_the_mirror_readme_facts() -> None:
    manifest = load_manifest()
    names = [a.name for a in manifest.assets]
    assert len(names) == len(set(names))
    assert [d.name for d in manifest.detectors] == ["mobiledet", "ssd_mobilenet_v1"]
    for det in manifest.detectors:
        for f in (det.cpu, det.edgetpu, det.labels):
            assert f is None or f in names
    for asset in manifest.assets:
        assert asset.url.startswith("https://")
        assert asset.accept and all(d.sha256 or d.git_blob for d in asset.accept)
