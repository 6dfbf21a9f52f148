"""Device selection on a machine without an Edge TPU: discovery, matching, errors, fallback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from coral_mfg.errors import DeviceError, ModelError
from coral_mfg.inference.model_file import inspect_model, twin_path
from coral_mfg.inference.runtime import Device, find_builds, list_edgetpus, parse_device_string
from coral_mfg.inference.startup import start_inference
from coral_mfg.settings import ModelsConfig, load_settings
from tests.conftest import model


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


def test_list_edgetpus_finds_usb_and_pcie(tmp_path: Path) -> None:
    usb, dev = tmp_path / "usb", tmp_path / "dev"
    _usb(usb, "1-1", "1a6e", "089a")  # before firmware load
    _usb(usb, "2-1", "18d1", "9302")  # after
    _usb(usb, "3-1", "046d", "c52b")  # a mouse
    (usb / "usb1").mkdir()  # a hub without ids
    dev.mkdir()
    (dev / "apex_0").touch()
    (dev / "video0").touch()
    found = list_edgetpus(usb, dev)
    assert [(t.kind, t.path) for t in found] == [
        ("usb", "1-1"), ("usb", "2-1"), ("pci", str(dev / "apex_0"))
    ]
    assert "firmware not yet loaded" in found[0].note


def test_list_edgetpus_on_this_machine_is_empty_or_real() -> None:
    for tpu in list_edgetpus():
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
        lambda event: None)
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
        start_inference(_models(device="edgetpu"), lambda event: None)
    message = str(err.value)
    assert "\n" not in message
    assert "libedgetpu.so.1 is not installed" in message and "--device cpu" in message


def test_edgetpu_model_with_device_cpu_names_file_and_fix() -> None:
    with pytest.raises(ModelError) as err:
        start_inference(_models(classifier_model=str(model("classifier_edgetpu.tflite"))),
                        lambda event: None)
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
    with pytest.raises(DeviceError, match=r"no CPU build \(classifier\.tflite\) beside it"):
        start_inference(_models(device="auto", classifier_model=str(lone)), lambda event: None)


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
