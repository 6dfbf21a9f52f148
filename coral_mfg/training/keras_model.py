"""Transfer learning on MobileNetV2: the model, its augmentation, and its training.

TensorFlow is imported here only, and only by ``train-classifier``: inspection
never needs it. The model takes RGB pixels 0..255 (the scaling to MobileNetV2's
[-1, 1] is its first layer), so once quantized its uint8 input is the crop's
pixels as they are, exactly what the application feeds it.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coral_mfg.core.errors import UserError
from coral_mfg.core.quiet import captured_output
from coral_mfg.training.dataset import Images

#: As the original recipe: the first 100 layers of an ImageNet base stay frozen.
FROZEN_LAYERS = 100
EARLY_STOP_PATIENCE = 3
INSTALL_HINT = "pip install 'coral-mfg[train]'"


def import_tensorflow() -> Any:
    """TensorFlow, or a one-line error saying how to install it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with captured_output():
            import tensorflow as tf
    except ImportError as exc:
        raise UserError(f"training needs TensorFlow, which is not installed ({exc.name} "
                        f"missing): {INSTALL_HINT}; inspection runs without it") from None
    try:  # the report's curves, drawn at the end: known now, not after the training
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(f"training's report needs matplotlib, which is not installed: "
                        f"{INSTALL_HINT}") from None
    return tf


@dataclass(frozen=True)
class Recipe:
    """How to train: the base network's shape and weights, and the schedule."""

    input_size: int = 224
    alpha: float = 1.0  # MobileNetV2's width multiplier
    weights: str = "imagenet"  # "imagenet", "none", or a path to an .h5 / .weights.h5 file
    epochs: int = 15
    batch_size: int = 32
    learning_rate: float | None = None  # None: 1e-4 fine-tuning ImageNet, 1e-3 from scratch
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """How the model was trained, for the report: enough to train it again."""
        return {**asdict(self), "learning_rate": self.rate,
                "frozen_layers": FROZEN_LAYERS if self.pretrained else 0}

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"

    @property
    def rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-4 if self.pretrained else 1e-3


@dataclass
class History:
    """Per epoch: loss and accuracy on the training and validation sets."""

    curves: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0

    @property
    def epochs(self) -> int:
        return len(self.curves.get("loss", []))


def _base(tf: Any, recipe: Recipe) -> Any:
    keras = tf.keras
    weights: str | None = {"imagenet": "imagenet", "none": None}.get(recipe.weights,
                                                                     recipe.weights)
    if weights not in (None, "imagenet") and not Path(recipe.weights).is_file():
        raise UserError(f"weights file {recipe.weights} does not exist; pass --weights "
                        "imagenet, none, or the path of MobileNetV2 weights without its top")
    shape = (recipe.input_size, recipe.input_size, 3)
    try:
        return keras.applications.MobileNetV2(input_shape=shape, alpha=recipe.alpha,
                                              include_top=False, weights=weights)
    except ValueError as exc:  # a size or alpha ImageNet weights do not exist for
        raise UserError(f"MobileNetV2 cannot be built with these settings: {exc}") from None
    except Exception as exc:  # the ImageNet download failed
        if weights != "imagenet":
            raise UserError(f"cannot load weights {recipe.weights}: {exc}") from None
        why = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise UserError(f"cannot download the ImageNet weights ({why}); connect this "
                        "machine to the internet once, copy the weights file Keras names into "
                        "~/.keras/models/ (see docs/own-product.md), or pass --weights none "
                        "or a path to local weights") from None


def build_model(tf: Any, recipe: Recipe, classes: int) -> Any:
    """MobileNetV2 without its top, then pooling, dropout and a softmax over the grades."""
    keras = tf.keras
    keras.utils.set_random_seed(recipe.seed)
    base = _base(tf, recipe)
    if recipe.pretrained:
        for layer in base.layers[:FROZEN_LAYERS]:
            layer.trainable = False
    inputs = keras.Input((recipe.input_size, recipe.input_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="grades")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(recipe.rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _augmenter(tf: Any, seed: int) -> Any:
    """Variations a camera over a line produces: flips, small turns and zooms, light."""
    layers = tf.keras.layers
    return tf.keras.Sequential([
        layers.RandomFlip("horizontal_and_vertical", seed=seed),
        layers.RandomRotation(0.1, seed=seed),
        layers.RandomZoom(0.1, seed=seed),
        layers.RandomBrightness(0.15, value_range=(0.0, 255.0), seed=seed),
        layers.RandomContrast(0.15, seed=seed),
    ])


def _batches(tf: Any, images: Images, recipe: Recipe, augment: bool) -> Any:
    data = tf.data.Dataset.from_tensor_slices((images.pixels, images.labels))
    if augment:
        data = data.shuffle(len(images), seed=recipe.seed, reshuffle_each_iteration=True)
    data = data.batch(recipe.batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    if augment:
        aug = _augmenter(tf, recipe.seed)
        data = data.map(lambda x, y: (tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y))
    return data.prefetch(2)


def class_weights(labels: np.ndarray[Any, Any], classes: int) -> dict[int, float]:
    """Weights that make each grade count equally, however rare the defect."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    return {i: float(len(labels) / (classes * n)) if n else 0.0 for i, n in enumerate(counts)}


def train(tf: Any, model: Any, train_set: Images, val_set: Images, recipe: Recipe) -> History:
    """Fit with early stopping on the validation loss; the best epoch's weights are kept."""
    keras = tf.keras
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=EARLY_STOP_PATIENCE,
                                         restore_best_weights=True)
    classes = int(model.outputs[0].shape[-1])
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")  # the data is shuffled
    fit = model.fit(_batches(tf, train_set, recipe, augment=True),
                    validation_data=_batches(tf, val_set, recipe, augment=False),
                    epochs=recipe.epochs, callbacks=[stop],
                    class_weight=class_weights(train_set.labels, classes),
                    verbose=1 if sys.stdout.isatty() else 2)
    curves = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    val_loss = curves.get("val_loss", [0.0])
    return History(curves, int(np.argmin(val_loss)) + 1)


def predict(model: Any, images: Images, batch_size: int) -> np.ndarray[Any, Any]:
    """The float model's grade scores, one row per image."""
    return np.asarray(model.predict(images.pixels.astype(np.float32), batch_size=batch_size,
                                    verbose=0))
