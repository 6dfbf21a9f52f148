from __future__ import annotations

from pathlib import Path

import pytest

from coral_mfg.core.errors import ModelError
from coral_mfg.inference.labels import parse_labels, read_labels
from tests.conftest import model


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0  person\n1  bicycle\n", {0: "person", 1: "bicycle"}),
        ("0 fresh_apple\n1 rotten_apple", {0: "fresh_apple", 1: "rotten_apple"}),
        ("0  person\n2  car\n52  apple\n", {0: "person", 2: "car", 52: "apple"}),
        ("10  fire hydrant\n12  stop sign", {10: "fire hydrant", 12: "stop sign"}),
        ("person\nbicycle\ncar\n", {0: "person", 1: "bicycle", 2: "car"}),
        ("???\nperson\nbicycle\n", {0: "person", 1: "bicycle"}),
        ("\n\nfresh\n\nrotten\n\n", {0: "fresh", 1: "rotten"}),
        ("0: cat\n1: dog\n", {0: "cat", 1: "dog"}),
        ("", {}),
        ("3d printer\nrobot\n", {0: "3d printer", 1: "robot"}),
    ],
    ids=[
        "coral-two-spaces", "coral-one-space", "coral-gaps", "coral-multiword", "plain",
        "plain-placeholder", "blank-lines", "colon", "empty", "plain-leading-digit",
    ],
)
def test_parse_labels(text: str, expected: dict[int, str]) -> None:
    assert parse_labels(text) == expected


def test_real_coco_labels() -> None:
    labels = read_labels(model("coco_labels.txt"))
    assert labels[0] == "person"
    assert labels[52] == "apple"
    assert 11 not in labels  # COCO's id gaps are kept


def test_missing_labels_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"labels file .*nope\.txt not found"):
        read_labels(tmp_path / "nope.txt")
