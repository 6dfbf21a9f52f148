"""Device selection on a machine without an Edge TPU: discovery, matching, errors, fallback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coral_mfg.config.settings import ModelsConfig, load_settings
from coral_mfg.core.errors import DeviceError, ModelError
from coral_mfg.core.events import Stamper
from coral_mfg.inference.discovery import Roots, survey
from coral_mfg.inference.model_file import inspect_model, twin_path
from coral_mfg.inference.runtime import Device, find_builds, parse_device_string
from coral_mfg.inference.startup import start_inference
from tests.conftest import ROOT, model


def test_edgetpu_model_is_recognised_before_running() -> None:
    tpu = inspect_model(model("classifier_edgetpu.tflite"))
    cpu = inspect_model(model("classifier.tflite"))
    det = inspect_model(model("ssd_mobilenet_v1_coco_quant_detect.tflite"))
    assert tpu.edgetpu and not cpu.edgetpu and not det.edgetpu
    assert tpu.is_classifier and cpu.is_classifier and det.is_detector
    assert not det.is_classifier and not cpu.is_detector
    assert cpu.input_size == (224, 224) and det.input_size == (300, 300)


@pytest.mark.parametrize(
    ("name", "edgetpu", "expected"),
    [
        ("classifier.tflite", True, "classifier_edgetpu.tflite"),
        ("classifier_edgetpu.tflite", True, "classifier_edgetpu.tflite"),
        ("classifier_edgetpu.tflite", False, "classifier.tflite"),
        ("classifier.tflite", False, "classifier.tflite"),
        ("a_edgetpu_b.tflite", True, "a_edgetpu_b_edgetpu.tflite"),
    ],
)
def test_twin_path(name: str, edgetpu: bool, expected: str) -> None:
    assert twin_path(Path("/m") / name, edgetpu=edgetpu) == Path("/m") / expected


@pytest.mark.parametrize("device", ["usb", "usb:0", "usb:12", "pci", "pci:1", ":0", ":3", None, ""])
def test_valid_device_strings(device: str | None) -> None:
    assert parse_device_string(device) == (device or None)


@pytest.mark.parametrize("device", ["usb0", "USB", "pci:", ":", "usb:a", "gpu", "usb:0:1"])
def test_invalid_device_strings(device: str) -> None:
    with pytest.raises(DeviceError, match="usb, usb:N, pci, pci:N or :N"):
        parse_device_string(device)


def _usb(root: Path, name: str, vendor: str, product: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "idVendor").write_text(vendor + "\n")
    (root / name / "idProduct").write_text(product + "\n")


def test_survey_finds_usb_and_pcie(tmp_path: Path) -> None:
    sys_root, dev = tmp_path / "sys", tmp_path / "dev"
    usb = sys_root / "bus" / "usb" / "devices"
    _usb(usb, "1-1", "1a6e", "089a")  # before firmware load
    _usb(usb, "2-1", "18d1", "9302")  # after
    _usb(usb, "3-1", "046d", "c52b")  # a mouse
    (usb / "usb1").mkdir()  # a hub without ids
    pci = sys_root / "bus" / "pci" / "devices" / "0000:01:00.0"
    pci.mkdir(parents=True)
    (pci / "vendor").write_text("0x1ac1\n")
    (pci / "device").write_text("0x089a\n")
    (pci / "apex" / "apex_0").mkdir(parents=True)
    (sys_root / "bus" / "pci" / "drivers" / "apex").mkdir(parents=True)
    (pci / "driver").symlink_to(sys_root / "bus" / "pci" / "drivers" / "apex")
    dev.mkdir()
    (dev / "apex_0").touch()
    (dev / "video0").touch()
    found = survey(Roots(sys_root, dev), page_size=4096)
    assert [(t.kind, t.sysname) for t in found] == [
        ("pci", "0000:01:00.0"), ("usb", "1-1"), ("usb", "2-1")
    ]
    assert found[0].node == dev / "apex_0" and found[0].usable
    assert "firmware not loaded yet" in found[1].describe()


def test_survey_on_this_machine_is_empty_or_real() -> None:
    for tpu in survey():
        assert tpu.kind in ("usb", "pci")


def _models(**flags: object) -> ModelsConfig:
    return load_settings({"device": "cpu", **flags}).models


def test_the_cpu_twin_of_an_edgetpu_classifier_is_found() -> None:
    builds = find_builds("classifier", model("classifier_edgetpu.tflite"))
    assert builds.tpu is not None and builds.tpu.path.name == "classifier_edgetpu.tflite"
    assert builds.cpu is not None and builds.cpu.path.name == "classifier.tflite"
    assert builds.on(Device.CPU).path.name == "classifier.tflite"
    assert builds.on(Device.EDGETPU).path.name == "classifier_edgetpu.tflite"


def test_auto_without_a_runtime_runs_on_the_cpu_and_says_why() -> None:
    inference = start_inference(
        _models(device="auto", classifier_model=str(model("classifier_edgetpu.tflite"))),
        lambda event: None, Stamper("test"))
    try:
        assert inference.pool.device is Device.CPU
        note = inference.notes[0]
        assert note.startswith("Edge TPU not used: the Edge TPU runtime libedgetpu.so.1 is not "
                               "installed")
        assert "\n" not in note
    finally:
        inference.pool.close()


def test_device_edgetpu_without_a_runtime_fails_in_one_line() -> None:
    with pytest.raises(DeviceError) as err:
        start_inference(_models(device="edgetpu"), lambda event: None, Stamper("test"))
    message = str(err.value)
    assert "\n" not in message
    assert "libedgetpu.so.1 is not installed" in message and "--device cpu" in message


def test_edgetpu_model_with_device_cpu_names_file_and_fix() -> None:
    with pytest.raises(ModelError) as err:
        start_inference(_models(classifier_model=str(model("classifier_edgetpu.tflite"))),
                        lambda event: None, Stamper("test"))
    message = str(err.value)
    assert "classifier_edgetpu.tflite is compiled for the Edge TPU" in message
    assert "classifier.tflite" in message.split("pass its CPU build")[1]


def test_cpu_model_with_device_edgetpu_and_no_twin(tmp_path: Path) -> None:
    lone = tmp_path / "ssd_mobilenet_v1_coco_quant_detect.tflite"
    shutil.copy(model(lone.name), lone)
    with pytest.raises(ModelError, match=r"is a CPU model .*ssd_mobilenet_v1_coco_quant_detect_"
                       r"edgetpu\.tflite.*edgetpu_compiler"):
        find_builds("detector", lone).on(Device.EDGETPU)


def test_edgetpu_model_alone_without_tpu(tmp_path: Path) -> None:
    lone = tmp_path / "classifier_edgetpu.tflite"
    shutil.copy(model(lone.name), lone)
    shutil.copy(model("classifier_labels.txt"), tmp_path)
    with pytest.raises(DeviceError, match=r"no CPU build \(classifier\.tflite\) beside it"):
        start_inference(_models(device="auto", classifier_model=str(lone)),
                        lambda event: None, Stamper("test"))


def test_auto_prefers_the_tpu_build() -> None:
    builds = find_builds("classifier", model("classifier.tflite"))
    assert builds.tpu is not None and not builds.given_for_tpu
    detector = find_builds("detector", model("ssd_mobilenet_v1_coco_quant_detect.tflite"))
    assert detector.tpu is None  # no Edge TPU build: it stays on the CPU, in the TPU's worker


@pytest.mark.parametrize(
    ("role", "name", "match"),
    [
        ("detector", "classifier.tflite", "not an SSD detection model .it looks like a classifier"),
        ("classifier", "ssd_mobilenet_v1_coco_quant_detect.tflite",
         "not an image classification model .it looks like a detector"),
    ],
)
def test_wrong_role_is_refused(role: str, name: str, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        find_builds(role, model(name))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "not a TensorFlow Lite model"),
        (b"hello world, not a model", "not a TensorFlow Lite model"),
        (None, "truncated or corrupt"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_bad_model_files(tmp_path: Path, content: bytes | None, match: str) -> None:
    bad = tmp_path / "bad.tflite"
    if content is None:
        content = model("classifier.tflite").read_bytes()[:50_000]
    bad.write_bytes(content)
    with pytest.raises(ModelError, match=match):
        inspect_model(bad)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found: run 'coral-mfg fetch-assets'"):
        inspect_model(tmp_path / "gone.tflite")


_BLOCK_LITERT = '''
import importlib.abc, sys
class _NoLiteRT(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ai_edge_litert", "tflite_runtime"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, _NoLiteRT())
'''


def test_model_files_read_with_no_litert(tmp_path: Path) -> None:
    """Model files are read by the project's own reader: with LiteRT not importable, real
    models are still understood, a damaged one is still called damaged, and the run
    names the missing runtime, never a corrupt file."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCK_LITERT)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(model("classifier.tflite").read_bytes()[:50_000])
    script = (
        "import sys; from pathlib import Path\n"
        "from coral_mfg.core.errors import ModelError\n"
        "from coral_mfg.inference.model_file import inspect_model\n"
        "for p in sys.argv[1:-1]:\n"
        "    i = inspect_model(Path(p))\n"
        "    print(Path(p).name, i.edgetpu, i.is_detector, i.is_classifier, i.input_size,\n"
        "          i.postprocess_outputs)\n"
        "try:\n"
        "    inspect_model(Path(sys.argv[-1]))\n"
        "except ModelError as e:\n"
        "    print(e)\n"
        "print('litert loaded:', 'ai_edge_litert' in sys.modules)\n")
    names = ["classifier.tflite", "classifier_edgetpu.tflite",
             "ssd_mobilenet_v1_coco_quant_detect.tflite"]
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", script, *(str(model(n)) for n in names),
                             str(cut)], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    expected = []
    for name in names:
        info = inspect_model(model(name))
        expected.append(f"{name} {info.edgetpu} {info.is_detector} {info.is_classifier} "
                        f"{info.input_size} {info.postprocess_outputs}")
    lines = result.stdout.splitlines()
    assert lines[:3] == expected
    assert "truncated or corrupt" in lines[3] and "ModuleNotFoundError" not in lines[3]
    assert lines[4] == "litert loaded: False"
    run = subprocess.run([sys.executable, "-m", "coral_mfg", "--headless", "--device", "cpu"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert "LiteRT cannot be imported" in last and "pip install ai-edge-litert" in last
    assert "corrupt" not in run.stderr and "Traceback" not in run.stderr
