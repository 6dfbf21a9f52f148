"""Device selection on a machine without an Edge TPU: discovery, matching, errors, fallback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coral_mfg.errors import DeviceError, ModelError
from coral_mfg.inference.model_file import inspect_model, twin_path
from coral_mfg.inference.runtime import (
    Device,
    Runtime,
    choose_model,
    list_edgetpus,
    parse_device_string,
)
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


def _no_tpu() -> bool:
    return False


def test_auto_falls_back_to_cpu_twin_of_edgetpu_classifier() -> None:
    choice = choose_model("classifier", model("classifier_edgetpu.tflite"), Device.AUTO, _no_tpu)
    assert choice.device is Device.CPU
    assert choice.path == model("classifier.tflite")
    assert "CPU twin" in choice.reason


def test_auto_on_real_runtime_runs_cpu_twin() -> None:
    rt = Runtime(Device.AUTO)
    choice = rt.choose("classifier", model("classifier_edgetpu.tflite"))
    assert choice.device is Device.CPU and choice.path.name == "classifier.tflite"
    interp = rt.open(choice)
    assert interp.get_output_details()[0]["shape"].tolist() == [1, 2]
    assert rt.tpu_error is not None  # said once at start-up, why the TPU is not used
    assert "Edge TPU" in rt.describe() or "CPU" in rt.describe()


def test_edgetpu_device_without_tpu_fails_clearly() -> None:
    rt = Runtime(Device.EDGETPU)
    with pytest.raises(DeviceError) as err:
        rt.choose("classifier", model("classifier_edgetpu.tflite"))
    message = str(err.value)
    assert "\n" not in message
    assert "libedgetpu" in message or "no Edge TPU found" in message
    assert "--device cpu" in message


def test_edgetpu_model_with_device_cpu_names_file_and_fix() -> None:
    with pytest.raises(ModelError) as err:
        choose_model("classifier", model("classifier_edgetpu.tflite"), Device.CPU, _no_tpu)
    message = str(err.value)
    assert "classifier_edgetpu.tflite is compiled for the Edge TPU" in message
    assert "classifier.tflite" in message.split("pass its CPU build")[1]


def test_cpu_model_with_device_edgetpu_and_no_twin(tmp_path: Path) -> None:
    lone = tmp_path / "ssd_mobilenet_v1_coco_quant_detect.tflite"
    shutil.copy(model(lone.name), lone)
    with pytest.raises(ModelError, match=r"is a CPU model .*ssd_mobilenet_v1_coco_quant_detect_"
                       r"edgetpu\.tflite.*edgetpu_compiler"):
        choose_model("detector", lone, Device.EDGETPU, lambda: True)


def test_device_edgetpu_checks_the_device_first() -> None:
    with pytest.raises(DeviceError, match="no Edge TPU found"):
        choose_model("classifier", model("classifier.tflite"), Device.EDGETPU, _no_tpu)


def test_cpu_model_with_device_edgetpu_and_twin_needs_a_tpu() -> None:
    rt = Runtime(Device.EDGETPU)
    with pytest.raises(DeviceError):
        rt.choose("classifier", model("classifier.tflite"))


def test_edgetpu_model_alone_without_tpu(tmp_path: Path) -> None:
    lone = tmp_path / "classifier_edgetpu.tflite"
    shutil.copy(model(lone.name), lone)
    with pytest.raises(ModelError, match=r"no CPU build classifier\.tflite beside it"):
        choose_model("classifier", lone, Device.AUTO, _no_tpu)


def test_auto_prefers_tpu_build_when_a_tpu_answers() -> None:
    choice = choose_model("classifier", model("classifier.tflite"), Device.AUTO, lambda: True)
    assert choice.device is Device.EDGETPU
    assert choice.path.name == "classifier_edgetpu.tflite"


def test_tpu_is_not_probed_for_cpu_runs() -> None:
    def probe() -> bool:
        raise AssertionError("probed")

    choice = choose_model("detector", model("ssd_mobilenet_v1_coco_quant_detect.tflite"),
                          Device.AUTO, probe)
    assert choice.device is Device.CPU


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
        choose_model(role, model(name), Device.AUTO, _no_tpu)


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


@pytest.fixture(scope="module")
def fake_libedgetpu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a library named libedgetpu.so.1 that finds no device (needs a C compiler)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to build the fake Edge TPU runtime"
    out = tmp_path_factory.mktemp("libedgetpu")
    src = Path(__file__).parent / "fake_edgetpu" / "fake_edgetpu.c"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(out / "libedgetpu.so.1"), str(src)],
                   check=True)
    return out


@pytest.mark.parametrize(
    ("args", "logged"),
    [
        (["--device", "edgetpu", "--edgetpu_device", "usb:1"], "create device=usb:1"),
        (["--device", "edgetpu", "--edgetpu_device", "pci"], "create device=pci"),
        (["--device", "edgetpu"], "create"),
    ],
)
def test_delegate_is_loaded_with_the_device_string(
    fake_libedgetpu: Path, tmp_path: Path, args: list[str], logged: str
) -> None:
    """The real loading path through LiteRT's load_delegate, against a runtime with no TPU."""
    log = tmp_path / "calls.log"
    env = {**os.environ, "LD_LIBRARY_PATH": str(fake_libedgetpu), "FAKE_EDGETPU_LOG": str(log)}
    result = subprocess.run([sys.executable, "-m", "coral_mfg", *args, "--headless"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert log.read_text().splitlines() == [logged]  # opened once, with the user's device
    errors = [x for x in result.stderr.splitlines() if x.startswith("coral-mfg: error:")]
    assert len(errors) == 1 and "no Edge TPU found" in errors[0]
    assert "--device cpu" in errors[0] and "Traceback" not in result.stderr


def test_auto_falls_back_when_the_runtime_finds_no_device(
    fake_libedgetpu: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    env = {**os.environ, "LD_LIBRARY_PATH": str(fake_libedgetpu), "FAKE_EDGETPU_LOG": str(log)}
    code = (
        "from coral_mfg.inference.runtime import Runtime, Device\n"
        "from coral_mfg.assets import app_home\n"
        "rt = Runtime(Device.AUTO)\n"
        "c = rt.choose('classifier', app_home() / 'models' / 'classifier_edgetpu.tflite')\n"
        "print(c.device, c.path.name, '|', rt.tpu_error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.startswith("cpu classifier.tflite | no Edge TPU found")
    assert log.read_text().splitlines() == ["create"]
