"""Whether a trained classifier is fit to run, from the report its training wrote beside it.

``coral-mfg train-classifier`` writes ``report.json`` beside the model; the same check
warns at the end of the training, in the report, and at the start of every run that uses
the model: a grade the model mostly gets wrong, or a quantized model (the one that runs)
that disagrees with the float one it was made from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_JSON = "report.json"
#: Below this validation accuracy for any grade, the model is not fit to grade it.
MIN_GRADE_ACCURACY = 0.80
#: Below this share of validation images graded alike, quantization changed the model.
MIN_AGREEMENT = 0.95


def model_warnings(report: dict[str, Any]) -> list[str]:
    """The warnings a training report's numbers call for, in words, each with its fix."""
    out = []
    per_grade: dict[str, float] = report["validation"]["quantized"]["per_grade"]
    low = [(g, v) for g, v in per_grade.items() if v < MIN_GRADE_ACCURACY]
    if low:
        said = ", ".join(f"{g} {v:.0%}" for g, v in low)
        out.append(f"validation accuracy below {MIN_GRADE_ACCURACY:.0%} for {said}: the model "
                   "cannot be trusted to grade "
                   f"{'it' if len(low) == 1 else 'them'}; add more varied images of "
                   f"{'that grade' if len(low) == 1 else 'those grades'} or train longer")
    agreement = float(report["quantization"]["agreement"])
    if agreement < MIN_AGREEMENT:
        out.append(f"the quantized model agrees with the float one on only {agreement:.0%} "
                   "of the validation images (the quantized one is the one that runs); "
                   "more varied images usually help")
    return out


def report_beside(model: Path) -> Path:
    return model.parent / REPORT_JSON


def warnings_beside(model: Path) -> list[str]:
    """The warnings of the training report beside ``model``; none when there is no report
    (a bundled or foreign model). A report that cannot be read is itself a warning."""
    path = report_beside(model)
    if not path.is_file():
        return []
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        return model_warnings(report)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"its training report {path} cannot be read ({type(exc).__name__}: {exc}); "
                "train it again to check it"]
