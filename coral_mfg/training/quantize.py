"""Post-training full-integer quantization, and a check that it kept the model's answers.

The Edge TPU runs only 8-bit integer models, and the application feeds the
classifier uint8 pixels and reads uint8 scores, so every tensor is quantized
with ranges measured on a representative set drawn from the training images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from coral_mfg.core.quiet import captured_output
from coral_mfg.inference.adapters import class_scores, write_rgb
from coral_mfg.training.dataset import Images
from coral_mfg.training.progress import Progress

REPRESENTATIVE_MAX = 300


def full_range(size: int) -> npt.NDArray[np.uint8]:
    """An image holding every value 0..255 in each channel: with it in the representative
    set, the input's range is exactly 0..255, so its uint8 form is the pixels unchanged
    (scale 1, zero point 0), as the application feeds them."""
    ramp = np.resize(np.arange(256, dtype=np.uint8), size * size)
    return np.repeat(ramp.reshape(size, size, 1), 3, axis=2)


def representative(images: Images, seed: int, tick: Callable[[], None] | None = None,
                   ) -> Callable[[], Iterator[list[npt.NDArray[np.float32]]]]:
    """Up to :data:`REPRESENTATIVE_MAX` training images, every grade among them."""
    rng = np.random.default_rng(seed)
    n = min(len(images), REPRESENTATIVE_MAX)
    chosen = rng.choice(len(images), n, replace=False)
    size = images.pixels.shape[1]

    def samples() -> Iterator[list[npt.NDArray[np.float32]]]:
        yield [full_range(size)[None].astype(np.float32)]
        if tick is not None:
            tick()
        for i in chosen.tolist():
            if tick is not None:
                tick()
            yield [images.pixels[i][None].astype(np.float32)]

    return samples


def quantize(tf: Any, model: Any, images: Images, seed: int, title: str) -> bytes:
    """The model as a fully integer TFLite flatbuffer, uint8 in and out, its ranges
    measured on ``images`` (a progress bar titled ``title`` counts them)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    with captured_output() as chatter:
        bar = Progress(min(len(images), REPRESENTATIVE_MAX) + 1, title, chatter.terminal)
        converter.representative_dataset = representative(images, seed, bar.add)
        try:
            return bytes(converter.convert())
        except Exception:
            chatter.keep = True
            raise


def interpreter(model: bytes) -> Any:
    """The quantized model in LiteRT, the runtime the application runs it in."""
    from ai_edge_litert.interpreter import Interpreter

    with captured_output():
        it = Interpreter(model_content=model)
        it.allocate_tensors()
    return it


def quantized_scores(it: Any, images: Images) -> npt.NDArray[np.float32]:
    """Grade scores of the quantized model, fed exactly as the application feeds crops."""
    rows = []
    for pixels in images.pixels:
        write_rgb(it, pixels)
        it.invoke()
        rows.append(class_scores(it))
    classes = it.get_output_details()[0]["shape"][-1]
    return np.vstack(rows) if rows else np.zeros((0, classes), np.float32)


@dataclass(frozen=True)
class Agreement:
    """How often the quantized model picks the float model's grade on the validation set."""

    agreed: int
    total: int

    @property
    def rate(self) -> float:
        return self.agreed / self.total if self.total else 1.0


def agreement(float_scores: npt.NDArray[Any], quant_scores: npt.NDArray[Any]) -> Agreement:
    same = np.argmax(float_scores, axis=1) == np.argmax(quant_scores, axis=1)
    return Agreement(int(same.sum()), len(same))


def io_types(it: Any) -> dict[str, Any]:
    """The input and output tensors' types and quantization, for the report."""
    return {"input": _described(it.get_input_details()[0]),
            "output": _described(it.get_output_details()[0])}


def _described(tensor: dict[str, Any]) -> dict[str, Any]:
    scale, zero_point = tensor["quantization"]
    return {"dtype": np.dtype(tensor["dtype"]).name, "shape": [int(v) for v in tensor["shape"]],
            "scale": float(scale), "zero_point": int(zero_point)}
