"""Label files in the two forms found next to detection and classification models."""

from __future__ import annotations

import re
from pathlib import Path

from coral_mfg.core.errors import ModelError, read_user_text

_ID_LABEL = re.compile(r"^\s*(\d+)[\s:,]+(.+?)\s*$")
#: TensorFlow's COCO label maps start with a placeholder for the background
#: class the exported model does not emit.
_PLACEHOLDER = "???"

#: The labels file ``train-classifier`` writes beside its model (and a camera's own
#: classifier is read with, unless its ``classifier_labels`` says otherwise).
LABELS_FILE = "classifier_labels.txt"


def labels_beside(model: Path) -> Path | None:
    """The labels file ``train-classifier`` wrote beside ``model``, when there is one."""
    beside = model.parent / LABELS_FILE
    return beside if beside.is_file() else None


def parse_labels(text: str) -> dict[int, str]:
    """Parse Coral's ``id  label`` form or a plain one-label-per-line form.

    In the plain form a leading ``???`` line marks ids that start at 1 in the
    file but at 0 in the model, so it is dropped and numbering starts at 0.
    """
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return {}
    if all(_ID_LABEL.match(line) for line in lines):
        labels: dict[int, str] = {}
        for line in lines:
            m = _ID_LABEL.match(line)
            assert m is not None
            labels[int(m.group(1))] = m.group(2)
        return labels
    if lines[0] == _PLACEHOLDER:
        lines = lines[1:]
    return dict(enumerate(lines))


def read_labels(path: Path) -> dict[int, str]:
    """Read a labels file, with a message that names the file when it is unusable."""
    text = read_user_text(path, "labels file",
                          "run 'coral-mfg fetch-assets' or pass the right path", ModelError)
    labels = parse_labels(text)
    if not labels:
        raise ModelError(f"labels file {path} is empty; pass the labels that belong to the model")
    return labels
