"""What a ``.tflite`` file is, read from its flatbuffer without running it.

Running an Edge TPU-compiled model on the CPU fails deep inside the runtime, so
the application reads the operator table first and decides with a message the
user can act on. The file is read by the project's own flatbuffer reader: no
inference runtime is needed to tell what a model is, or that it is damaged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from coral_mfg.core.errors import ModelError, not_a_file

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
    problem = not_a_file(path, "model file", "pass a .tflite file")
    if problem:
        raise ModelError(problem)
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
    except (struct.error, ValueError, IndexError) as exc:
        raise ModelError(
            f"{path} is truncated or corrupt ({_why_corrupt(exc)}); "
            "run 'coral-mfg fetch-assets' to download it again"
        ) from None


def _why_corrupt(exc: Exception) -> str:
    if isinstance(exc, struct.error):
        return "a table runs past the end of the file"
    if isinstance(exc, IndexError):
        return "an index points outside its table"
    return str(exc)


class _Table:
    """One flatbuffer table of a ``.tflite`` file, read by field number (the schema's order).

    The project reads the few fields it needs itself, so a model file is
    understood without any inference runtime installed. Every read is bounds
    checked by :func:`struct.unpack_from`; a file cut short raises here.
    """

    __slots__ = ("buf", "pos", "vsize", "vtable")

    def __init__(self, buf: bytes, pos: int) -> None:
        if not 0 <= pos < len(buf):
            raise ValueError(f"table offset {pos} outside the file")
        self.buf = buf
        self.pos = pos
        self.vtable = pos - _i32(buf, pos)
        self.vsize = _u16(buf, self.vtable)

    def _field(self, number: int) -> int:
        """Where field ``number`` is stored, or 0 when the file leaves it at its default."""
        slot = 4 + 2 * number
        if slot >= self.vsize:
            return 0
        offset = _u16(self.buf, self.vtable + slot)
        return self.pos + offset if offset else 0

    def _target(self, number: int) -> int:
        at = self._field(number)
        return at + _u32(self.buf, at) if at else 0

    def scalar(self, number: int, fmt: str, default: int = 0) -> int:
        at = self._field(number)
        return int(struct.unpack_from("<" + fmt, self.buf, at)[0]) if at else default

    def string(self, number: int) -> bytes | None:
        at = self._target(number)
        if not at:
            return None
        size = _u32(self.buf, at)
        return _slice(self.buf, at + 4, size)

    def ints(self, number: int) -> tuple[int, ...]:
        at = self._target(number)
        if not at:
            return ()
        size = _u32(self.buf, at)
        return tuple(struct.unpack_from(f"<{size}i", self.buf, at + 4))

    def tables(self, number: int) -> list[_Table]:
        at = self._target(number)
        if not at:
            return []
        size = _u32(self.buf, at)
        items = [at + 4 + 4 * i for i in range(size)]
        return [_Table(self.buf, item + _u32(self.buf, item)) for item in items]

    def vector_size(self, number: int) -> int:
        """Bytes of a ``[ubyte]`` field, checked to lie inside the file."""
        at = self._target(number)
        if not at:
            return 0
        size = _u32(self.buf, at)
        _slice(self.buf, at + 4, size)
        return size


def _u16(buf: bytes, at: int) -> int:
    return int(struct.unpack_from("<H", buf, at)[0])


def _u32(buf: bytes, at: int) -> int:
    return int(struct.unpack_from("<I", buf, at)[0])


def _i32(buf: bytes, at: int) -> int:
    return int(struct.unpack_from("<i", buf, at)[0])


def _slice(buf: bytes, start: int, size: int) -> bytes:
    if start < 0 or start + size > len(buf):
        raise ValueError(f"{size} bytes at {start} run past the end of the file")
    return buf[start:start + size]


# Field numbers of tensorflow/lite/schema/schema.fbs (stable: flatbuffers only append).
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS, _MODEL_BUFFERS = 1, 2, 4
_CODE_CUSTOM = 1
_GRAPH_TENSORS, _GRAPH_INPUTS, _GRAPH_OUTPUTS, _GRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_NAME = 0, 1, 3
_OP_OPCODE, _OP_OUTPUTS = 0, 2
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2


def _parse(path: Path, buf: bytes) -> ModelInfo:
    model = _Table(buf, _u32(buf, 0))
    codes = [code.string(_CODE_CUSTOM) for code in model.tables(_MODEL_OPERATOR_CODES)]
    custom = {c.decode("utf-8", "replace") for c in codes if c}
    graphs = model.tables(_MODEL_SUBGRAPHS)
    if not graphs:
        raise ValueError("no subgraph")
    graph = graphs[0]
    tensors = graph.tables(_GRAPH_TENSORS)

    def spec(index: int) -> TensorSpec:
        tensor = tensors[index]
        name = (tensor.string(_TENSOR_NAME) or b"").decode("utf-8", "replace")
        dtype = _DTYPES.get(tensor.scalar(_TENSOR_TYPE, "b"), "other")
        return TensorSpec(index, name, tensor.ints(_TENSOR_SHAPE), dtype)

    postprocess: tuple[int, ...] = ()
    for op in graph.tables(_GRAPH_OPERATORS):
        if codes[op.scalar(_OP_OPCODE, "I")] == DETECTION_POSTPROCESS_OP.encode():
            postprocess = op.ints(_OP_OUTPUTS)
    inputs = tuple(spec(i) for i in graph.ints(_GRAPH_INPUTS))
    outputs = tuple(spec(i) for i in graph.ints(_GRAPH_OUTPUTS))
    # Touch every buffer so a file cut short fails here, not in the runtime.
    for buffer in model.tables(_MODEL_BUFFERS):
        buffer.vector_size(_BUFFER_DATA)
        offset = buffer.scalar(_BUFFER_OFFSET, "Q")
        if offset > 1:  # weights stored after the flatbuffer (models over 2 GB)
            _slice(buf, offset, buffer.scalar(_BUFFER_SIZE, "Q"))
    return ModelInfo(path, inputs, outputs, frozenset(custom), postprocess)
