"""What a ``.tflite`` file is, read from its flatbuffer without running it.

Running an Edge TPU-compiled model on the CPU fails deep inside the runtime, so
the application reads the operator table first and decides with a message the
user can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coral_mfg.errors import ModelError

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
DETECTION_POSTPROCESS_OP = "TFLite_Detection_PostProcess"
_TFLITE_IDENTIFIER = b"TFL3"
_EDGETPU_SUFFIX = "_edgetpu"


#: TFLite's TensorType numbers for the input types an image model may take.
_DTYPES = {0: "float32", 3: "uint8", 9: "int8"}


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as the file declares it; ``index`` is also the interpreter's tensor index."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str = "other"


@dataclass(frozen=True)
class ModelInfo:
    """What a model file is, known before any runtime touches it."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    custom_ops: frozenset[str]
    #: the TFLite_Detection_PostProcess operator's outputs: boxes, classes, scores,
    #: count, in the operator's own order, whatever the export named or sorted them
    postprocess_outputs: tuple[int, ...] = ()

    @property
    def edgetpu(self) -> bool:
        """True when parts of the graph run only through the Edge TPU delegate."""
        return EDGETPU_CUSTOM_OP in self.custom_ops

    @property
    def is_detector(self) -> bool:
        return DETECTION_POSTPROCESS_OP in self.custom_ops and len(self.postprocess_outputs) == 4

    @property
    def is_classifier(self) -> bool:
        return (
            len(self.outputs) == 1
            and len(self.outputs[0].shape) == 2
            and DETECTION_POSTPROCESS_OP not in self.custom_ops
        )

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the image input."""
        shape = self.inputs[0].shape
        return (shape[2], shape[1])


def twin_path(path: Path, *, edgetpu: bool) -> Path:
    """The conventional name of the other build: ``x.tflite`` <-> ``x_edgetpu.tflite``."""
    stem = path.stem
    if edgetpu:
        return path if stem.endswith(_EDGETPU_SUFFIX) else path.with_stem(stem + _EDGETPU_SUFFIX)
    if stem.endswith(_EDGETPU_SUFFIX):
        return path.with_stem(stem[: -len(_EDGETPU_SUFFIX)])
    return path


def inspect_model(path: Path) -> ModelInfo:
    """Read inputs, outputs and custom operators, or say plainly why the file is unusable."""
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(
            f"model file {path} not found: run 'coral-mfg fetch-assets' or pass the right path"
        ) from None
    except OSError as exc:
        raise ModelError(f"model file {path} cannot be read ({exc.strerror})") from None
    if len(buf) < 8 or buf[4:8] != _TFLITE_IDENTIFIER:
        raise ModelError(
            f"{path} is not a TensorFlow Lite model; pass a .tflite file "
            "(run 'coral-mfg fetch-assets' to restore the bundled ones)"
        )
    try:
        return _parse(path, buf)
    except Exception as exc:  # a truncated flatbuffer fails in many ways
        raise ModelError(
            f"{path} is truncated or corrupt ({type(exc).__name__}); "
            "run 'coral-mfg fetch-assets' to download it again"
        ) from None


def _parse(path: Path, buf: bytes) -> ModelInfo:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(buf, 0)
    codes = [model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength())]
    custom = {c.decode("utf-8", "replace") for c in codes if c}
    if model.SubgraphsLength() < 1:
        raise ValueError("no subgraph")
    graph = model.Subgraphs(0)

    def spec(index: int) -> TensorSpec:
        tensor = graph.Tensors(index)
        shape = tensor.ShapeAsNumpy()
        dims = tuple(int(d) for d in shape) if not isinstance(shape, int) else ()
        name = (tensor.Name() or b"").decode("utf-8", "replace")
        return TensorSpec(int(index), name, dims, _DTYPES.get(tensor.Type(), "other"))

    postprocess: tuple[int, ...] = ()
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if codes[op.OpcodeIndex()] == DETECTION_POSTPROCESS_OP.encode():
            postprocess = tuple(int(t) for t in op.OutputsAsNumpy())
    inputs = tuple(spec(graph.Inputs(i)) for i in range(graph.InputsLength()))
    outputs = tuple(spec(graph.Outputs(i)) for i in range(graph.OutputsLength()))
    # Touch the buffer table so a file cut short fails here, not in the runtime.
    for i in range(model.BuffersLength()):
        model.Buffers(i).DataLength()
    return ModelInfo(path, inputs, outputs, frozenset(custom), postprocess)
