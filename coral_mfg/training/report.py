"""What a training produced, in words a plant engineer can judge it by.

``report.json`` for machines, ``report.md`` for people, ``training_curves.png``
for the shape of the training: accuracy per grade and the confusion matrix are
those of the quantized model, the one that runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from coral_mfg.inference.model_report import REPORT_JSON as MODEL_REPORT
from coral_mfg.training.keras_model import History

REPORT_JSON = MODEL_REPORT
REPORT_MD = "report.md"
CURVES_PNG = "training_curves.png"


def confusion(truth: npt.NDArray[np.integer], scores: npt.NDArray[Any],
              classes: int) -> npt.NDArray[np.int64]:
    """Rows: the true grade; columns: the grade the model gave."""
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (truth, np.argmax(scores, axis=1)), 1)
    return matrix


@dataclass(frozen=True)
class Scores:
    """Accuracy overall and per grade (the share of each grade's images graded right)."""

    accuracy: float
    per_grade: dict[str, float]
    matrix: npt.NDArray[np.int64]

    @classmethod
    def of(cls, grades: tuple[str, ...], truth: npt.NDArray[np.integer],
           scores: npt.NDArray[Any]) -> Scores:
        matrix = confusion(truth, scores, len(grades))
        rows = matrix.sum(axis=1)
        per = {g: float(matrix[i, i] / rows[i]) if rows[i] else 0.0
               for i, g in enumerate(grades)}
        total = matrix.sum()
        return cls(float(np.trace(matrix) / total) if total else 0.0, per, matrix)

    def to_dict(self, grades: tuple[str, ...]) -> dict[str, Any]:
        return {"accuracy": round(self.accuracy, 4),
                "per_grade": {g: round(v, 4) for g, v in self.per_grade.items()},
                "confusion_matrix": {"rows_true_columns_predicted": list(grades),
                                     "counts": self.matrix.tolist()}}


def plot_curves(history: History, path: Path) -> None:
    """Loss and accuracy per epoch, training against validation, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    epochs = range(1, history.epochs + 1)
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            values = history.curves.get(prefix + key)
            if values:
                ax.plot(epochs, values, style, label=("validation " if prefix else "training ")
                        + key)
        ax.axvline(history.best_epoch, color="grey", linewidth=0.8)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key)
        ax.legend()
    fig.suptitle(f"training curves (kept: epoch {history.best_epoch})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    """The report for people: the numbers that decide whether to deploy the model."""
    grades = report["grades"]
    quant = report["validation"]["quantized"]
    lines = [f"# Classifier trained on {report['dataset']}", "",
             f"Grades: {', '.join(grades)}. Images: {report['images']['train']} for training, "
             f"{report['images']['validation']} for validation"
             f" ({report['images']['unreadable']} unreadable, skipped).", "",
             f"Validation accuracy of the quantized model: {quant['accuracy']:.1%} "
             f"(float model: {report['validation']['float']['accuracy']:.1%}); "
             f"the two agree on {report['quantization']['agreement']:.1%} of the images.", "",
             "| grade | accuracy (quantized) |", "|---|---|"]
    warnings = report.get("warnings") or []
    if warnings:
        lines[2:2] = ["**Warning: this model is not fit to run as it is.**", "",
                      *(f"- {w}" for w in warnings), ""]
    lines += [f"| {g} | {quant['per_grade'][g]:.1%} |" for g in grades]
    counts = quant["confusion_matrix"]["counts"]
    lines += ["", "Confusion matrix (rows: true grade, columns: graded as):", "",
              "| true \\ graded | " + " | ".join(grades) + " |",
              "|---" * (len(grades) + 1) + "|"]
    lines += [f"| {g} | " + " | ".join(str(n) for n in row) + " |"
              for g, row in zip(grades, counts, strict=True)]
    lines += ["", f"Training curves: {CURVES_PNG}. Epochs run: {report['training']['epochs']}, "
              f"kept: {report['training']['best_epoch']}.", ""]
    compiled = report.get("edgetpu")
    if compiled and compiled.get("models"):
        lines += ["Edge TPU (co-compiled):", ""]
        lines += [f"- {m['output']}: on-chip {m.get('on_chip_used', '?')}, off-chip "
                  f"{m.get('off_chip_streamed', '?')}" for m in compiled["models"]]
        lines.append("")
    lines += ["Run with:", "", "```sh", report["run_command"], "```", ""]
    return "\n".join(lines)


def write_report(folder: Path, report: dict[str, Any]) -> None:
    (folder / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (folder / REPORT_MD).write_text(markdown(report), encoding="utf-8")
