"""A folder per grade, read into arrays a classifier can learn from.

This part needs no TensorFlow, so a bad dataset is reported before the slow
import, and the checks are tested on their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from coral_mfg.core.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class DatasetError(UserError):
    """The dataset folder cannot be trained on as it is."""


@dataclass(frozen=True)
class GradeFolders:
    """The grades (folder names, sorted: their order is the label ids) and their images."""

    root: Path
    grades: tuple[str, ...]
    files: tuple[tuple[Path, ...], ...]  # per grade

    @classmethod
    def scan(cls, root: Path, min_images: int) -> GradeFolders:
        if not root.is_dir():
            state = "is a file, not a folder" if root.exists() else "does not exist"
            raise DatasetError(f"dataset folder {root} {state}; pass a folder with one "
                               "sub-folder of images per grade")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        files = [tuple(sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES))
                 for d in folders]
        empty = [d.name for d, f in zip(folders, files, strict=True) if not f]
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        if empty and len(folders) >= 2:
            raise DatasetError(f"grade folder {root / empty[0]} holds no images ({kinds}); "
                               "add images of that grade, or move the folder out of the "
                               "dataset")
        grades = [(d.name, f) for d, f in zip(folders, files, strict=True) if f]
        if len(grades) < 2:
            found = ", ".join(d.name for d in folders) or "none"
            raise DatasetError(f"dataset folder {root} needs a sub-folder of images ({kinds}) "
                               f"for each of at least two grades (found: {found}); for example "
                               f"{root}/good/*.jpg and {root}/defect/*.jpg")
        few = [(name, len(f)) for name, f in grades if len(f) < min_images]
        if few:
            name, n = few[0]
            raise DatasetError(f"grade '{name}' has {n} image(s) in {root / name}, fewer than "
                               f"{min_images}; add images of it (or lower --min_images)")
        return cls(root, tuple(n for n, _ in grades), tuple(f for _, f in grades))

    def labels_text(self) -> str:
        """The labels file the application reads: ``id grade`` per line."""
        return "".join(f"{i} {name}\n" for i, name in enumerate(self.grades))


@dataclass(frozen=True, eq=False)
class Images:
    """RGB images of one size, their grade ids and where they came from."""

    pixels: npt.NDArray[np.uint8]  # (N, size, size, 3)
    labels: npt.NDArray[np.int32]  # (N,)
    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: npt.NDArray[np.intp]) -> Images:
        return Images(self.pixels[index], self.labels[index],
                      tuple(self.paths[i] for i in index.tolist()))


def read_bgr(path: Path) -> npt.NDArray[np.uint8] | None:
    """An image file's pixels (BGR), or None when it cannot be read or decoded."""
    try:
        data = np.fromfile(path, np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    except OSError:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None or bgr.size == 0:
        return None
    return np.asarray(bgr, np.uint8)


def load_image(path: Path, size: int) -> npt.NDArray[np.uint8] | None:
    """An image as the application feeds a crop to the classifier: resized whole (not
    cropped or padded) with bilinear filtering, RGB; None when it cannot be read."""
    bgr = read_bgr(path)
    if bgr is None:
        return None
    small = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), np.uint8)


@dataclass(frozen=True)
class Loaded:
    images: Images
    unreadable: tuple[Path, ...]


def load_images(folders: GradeFolders, size: int,
                progress: Callable[[int], None] | None = None) -> Loaded:
    """Every readable image of every grade; unreadable files are skipped and listed."""
    pixels, labels, paths, bad = [], [], [], []
    for grade, files in enumerate(folders.files):
        for path in files:
            image = load_image(path, size)
            if image is None:
                bad.append(path)
            else:
                pixels.append(image)
                labels.append(grade)
                paths.append(path)
            if progress is not None:
                progress(1)
    array = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
    return Loaded(Images(array, np.asarray(labels, np.int32), tuple(paths)), tuple(bad))


def split(images: Images, validation: float, seed: int) -> tuple[Images, Images]:
    """A stratified split: each grade gives the same share (at least one image) to the
    validation set, so a rare defect is validated too."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for grade in np.unique(images.labels):
        mine = rng.permutation(np.flatnonzero(images.labels == grade))
        n_val = min(max(1, round(len(mine) * validation)), len(mine) - 1)
        val.append(mine[:n_val])
        train.append(mine[n_val:])
    return (images.subset(rng.permutation(np.concatenate(train))),
            images.subset(np.sort(np.concatenate(val))))


def check_counts(images: Images, grades: tuple[str, ...], min_images: int) -> None:
    """After unreadable files are skipped, every grade must still have enough images."""
    counts = np.bincount(images.labels, minlength=len(grades))
    for name, n in zip(grades, counts.tolist(), strict=True):
        if n < min_images:
            raise DatasetError(f"grade '{name}' has {n} readable image(s), fewer than "
                               f"{min_images}; add images of it (or lower --min_images)")
