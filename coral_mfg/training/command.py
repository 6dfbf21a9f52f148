"""``coral-mfg train-classifier DATASET_DIR``: a folder per grade in, a model folder out.

The steps: check the dataset (before the slow TensorFlow import), load and
split it, train MobileNetV2 by transfer learning, quantize to uint8, check the
quantized model against the float one, write the model, its labels and the
report, then co-compile with the detector when the Edge TPU compiler is here.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coral_mfg.config.flags import Parser
from coral_mfg.core.errors import UserError
from coral_mfg.core.files import output_folder
from coral_mfg.inference.labels import LABELS_FILE
from coral_mfg.inference.model_report import model_warnings
from coral_mfg.training import edgetpu_compile
from coral_mfg.training.dataset import GradeFolders, Images, check_counts, load_images, split
from coral_mfg.training.keras_model import (
    History,
    Recipe,
    build_model,
    import_tensorflow,
    predict,
    train,
)
from coral_mfg.training.progress import Progress
from coral_mfg.training.quantize import (
    agreement,
    interpreter,
    io_types,
    quantize,
    quantized_scores,
)
from coral_mfg.training.report import CURVES_PNG, REPORT_MD, Scores, plot_curves, write_report

MODEL_FILE = "classifier.tflite"


def parser() -> Parser:
    p = Parser(prog="coral-mfg train-classifier",
               description="Train a grade classifier for the inspected objects from a folder "
               "with one sub-folder of images per grade (as --harvest_dir fills it): "
               "MobileNetV2 transfer learning, full-integer (uint8) quantization, and "
               "co-compilation with the detector when edgetpu_compiler is installed. Needs "
               "TensorFlow: pip install 'coral-mfg[train]'.")
    p.add_argument("dataset", metavar="DATASET_DIR", type=Path)
    p.add_argument("--output", type=Path, metavar="DIR",
                   help="where the model, labels and report go (default: DATASET_DIR-model)")
    p.add_argument("--weights", default="imagenet", metavar="imagenet|none|FILE",
                   help="start from ImageNet weights (default; downloaded once by Keras), "
                   "from scratch, or from a local weights file of MobileNetV2 without its top")
    p.add_argument("--input_size", type=_size, default=Recipe.input_size, metavar="PX",
                   help=f"the classifier's input, PX x PX (default {Recipe.input_size})")
    p.add_argument("--alpha", type=float, default=Recipe.alpha, metavar="A",
                   help=f"MobileNetV2 width multiplier (default {Recipe.alpha:g})")
    p.add_argument("--epochs", type=_positive, default=Recipe.epochs, metavar="N",
                   help=f"at most N epochs; training stops earlier when the validation loss "
                   f"stops improving (default {Recipe.epochs})")
    p.add_argument("--batch_size", type=_positive, default=Recipe.batch_size, metavar="N")
    p.add_argument("--validation", type=_share, default=0.2, metavar="SHARE",
                   help="share of each grade held out for validation (default 0.2)")
    p.add_argument("--min_images", type=_at_least(2), default=10, metavar="N",
                   help="the fewest images a grade may have, at least 2: one is held out "
                   "for validation (default 10)")
    p.add_argument("--seed", type=int, default=Recipe.seed, metavar="N")
    p.add_argument("--detection_model", type=Path, metavar="FILE",
                   help="the detector (CPU build) to co-compile with (default: the run's)")
    p.add_argument("--no_compile", action="store_true",
                   help="do not run edgetpu_compiler even when it is installed")
    return p


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"a whole number of {low} or more, not {text!r}")
        return value

    return parse


_positive = _at_least(1)
_size = _at_least(32)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1 (0.2 is a fifth), not "
                                         f"{text!r}")
    return value


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    dataset: Path = args.dataset.expanduser().resolve()
    out: Path = (args.output or dataset.with_name(dataset.name + "-model")).expanduser()
    recipe = Recipe(args.input_size, args.alpha, args.weights, args.epochs, args.batch_size,
                    seed=args.seed)
    folders = GradeFolders.scan(dataset, args.min_images)
    detector = None if args.no_compile else _detector(args.detection_model)
    tf = import_tensorflow()
    with output_folder(out, "output folder", "--output"):
        return _train(tf, folders, recipe, args, out=out, detector=detector)


def _detector(given: Path | None) -> Path:
    """The detector's CPU build to co-compile with: the given one, else the run's."""
    from coral_mfg.config.settings import ModelsConfig
    from coral_mfg.inference.model_file import inspect_model
    from coral_mfg.inference.plan import plan_models

    path = given or plan_models(ModelsConfig()).detector
    info = inspect_model(path)
    if info.edgetpu:
        raise UserError(f"{path} is already compiled for the Edge TPU; pass the detector's "
                        "CPU build (the .tflite without _edgetpu) to --detection_model")
    return path


def _train(tf: Any, folders: GradeFolders, recipe: Recipe, args: Any, *, out: Path,
           detector: Path | None) -> int:
    started = time.monotonic()
    total = sum(len(f) for f in folders.files)
    bar = Progress(total, f"reading {total} images of {len(folders.grades)} grades", sys.stdout)
    loaded = load_images(folders, recipe.input_size, bar.add)
    if loaded.unreadable:
        print(f"skipped {len(loaded.unreadable)} unreadable image(s), e.g. "
              f"{loaded.unreadable[0]}")
    check_counts(loaded.images, folders.grades, args.min_images)
    train_set, val_set = split(loaded.images, args.validation, recipe.seed)
    print(f"training on {len(train_set)} images, validating on {len(val_set)}")
    model = build_model(tf, recipe, len(folders.grades))
    history = train(tf, model, train_set, val_set, recipe)
    float_scores = predict(model, val_set, recipe.batch_size)
    tflite = quantize(tf, model, train_set, recipe.seed, "quantizing to uint8")
    (out / MODEL_FILE).write_bytes(tflite)
    (out / LABELS_FILE).write_text(folders.labels_text(), encoding="utf-8")
    quantized = interpreter(tflite)
    quant_scores = quantized_scores(quantized, val_set)
    report = _report(folders, loaded.unreadable, (train_set, val_set), history,
                     (float_scores, quant_scores), quantized=quantized, out=out)
    report["recipe"] = recipe.to_dict()
    report["warnings"] = model_warnings(report)
    plot_curves(history, out / CURVES_PNG)
    status = _compile(report, out, detector)
    report["seconds"] = round(time.monotonic() - started, 1)
    write_report(out, report)
    _summary(report, out)
    return status


def _report(folders: GradeFolders, unreadable: tuple[Path, ...], sets: tuple[Images, Images],
            history: History, scores: tuple[Any, Any], *, quantized: Any,
            out: Path) -> dict[str, Any]:
    """Everything the report files say; ``scores``: the float and the quantized model's."""
    grades = folders.grades
    train_set, val_set = sets
    float_scores, quant_scores = scores
    agree = agreement(float_scores, quant_scores)
    return {
        "dataset": str(folders.root), "grades": list(grades),
        "images": {"train": len(train_set), "validation": len(val_set),
                   "unreadable": len(unreadable),
                   # the images trained and validated on, the unreadable ones not among them
                   "per_grade": {g: int(np.sum(train_set.labels == i) + np.sum(val_set.labels == i))
                                 for i, g in enumerate(grades)}},
        "training": {"epochs": history.epochs, "best_epoch": history.best_epoch,
                     "curves": history.curves},
        "validation": {"float": Scores.of(grades, val_set.labels, float_scores).to_dict(grades),
                       "quantized": Scores.of(grades, val_set.labels, quant_scores)
                       .to_dict(grades)},
        "quantization": {"agreement": round(agree.rate, 4), "agreed": agree.agreed,
                         "total": agree.total, **io_types(quantized)},
        "files": {"model": MODEL_FILE, "labels": LABELS_FILE, "curves": CURVES_PNG},
        "run_command": _run_command(out, None, grades),
    }


#: Grade names that usually mean a part passes, to fill in the printed command's
#: ``--pass_grades`` (a run refuses a classifier of the user's own without it).
PASSING_NAMES = ("good", "ok", "pass", "passed", "accept", "accepted", "fresh", "normal")


def passing_guess(grades: Sequence[str]) -> str:
    """The grades the printed command passes, or ``GRADE`` for the user to fill in."""
    guess = [g for g in grades if g.lower() in PASSING_NAMES
             or g.lower().startswith(("good_", "ok_", "fresh_"))]
    return ",".join(guess) or "GRADE"


def _run_command(out: Path, detector: Path | None, grades: Sequence[str]) -> str:
    args = ["coral-mfg"]
    if detector is not None:
        args += ["--detection_model", str(out / detector.name)]
    args += ["--classifier_model", str(out / MODEL_FILE),
             "--classifier_labels", str(out / LABELS_FILE),
             "--pass_grades", passing_guess(grades)]
    return shlex.join(args)


def _compile(report: dict[str, Any], out: Path, detector: Path | None) -> int:
    """Co-compile when asked and possible; the report says what happened either way."""
    if detector is None:
        return 0
    local = out / detector.name
    if detector.resolve() != local.resolve():
        shutil.copyfile(detector, local)  # the folder holds both builds of both models
    cmd = edgetpu_compile.command_text(local, out / MODEL_FILE, out)
    result = edgetpu_compile.co_compile(local, out / MODEL_FILE, out)
    if result is None:
        report["edgetpu"] = {"compiled": False, "command": cmd,
                             "note": f"{edgetpu_compile.COMPILER} is not on the PATH; "
                             f"{edgetpu_compile.INSTALL}"}
        return 0
    (out / "edgetpu_compiler.log").write_text(result.log, encoding="utf-8")
    report["edgetpu"] = {"compiled": result.ok, "command": cmd, "models": list(result.models),
                         "error": result.message or None}
    if result.ok:
        report["run_command"] = _run_command(out, detector, report["grades"])
    return 0 if result.ok else 1


def _summary(report: dict[str, Any], out: Path) -> None:
    quant = report["validation"]["quantized"]
    print(f"\nwrote {out / MODEL_FILE} (uint8, full-integer) and {out / LABELS_FILE}")
    print("validation accuracy (quantized): " + f"{quant['accuracy']:.1%}; per grade: "
          + ", ".join(f"{g} {v:.1%}" for g, v in quant["per_grade"].items()))
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print(f"report: {out / REPORT_MD}, curves: {out / CURVES_PNG}")
    tpu = report.get("edgetpu")
    if tpu and tpu["compiled"]:
        for m in tpu["models"]:
            print(f"Edge TPU: {m.get('output', '?')}: on-chip {m.get('on_chip_used', '?')}, "
                  f"off-chip {m.get('off_chip_streamed', '?')}")
    elif tpu and tpu.get("error"):
        print(f"error: co-compiling failed: {tpu['error']} (log: {out / 'edgetpu_compiler.log'})")
    elif tpu:
        print(f"{tpu['note']}\nthen co-compile both models, detector first:\n  {tpu['command']}")
    print(f"run it:\n  {report['run_command']}")
    if passing_guess(report["grades"]) == "GRADE":
        print(f"  with GRADE the grade(s) that pass, from {', '.join(report['grades'])}")
