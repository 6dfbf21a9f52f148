"""``coral-mfg train-anomaly`` and ``eval-anomaly``: a model of normal from good crops only.

No TensorFlow: the station's embedding extractor runs on LiteRT in this process,
on the CPU, so a few hundred crops take seconds. The steps: embed every good
crop (unreadable files skipped and counted, identical pictures kept once),
score each crop with a model that never saw it (the crops split into folds of
consecutive files, so a crop's neighbours from the next frames are mostly held
out with it), take the threshold that at most the chosen share of those
held-out scores exceed (a new good crop exceeds it with that chance at most,
as far as the held-out ones tell), then keep the folds' models (a Gaussian) or
fit one on every crop (nearest neighbours; see :mod:`coral_mfg.inference.anomaly`
for the two methods) and write the report.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from coral_mfg.config.assets import app_home, load_manifest, verify
from coral_mfg.config.flags import Parser
from coral_mfg.core.errors import UserError
from coral_mfg.core.files import output_folder
from coral_mfg.core.quiet import captured_output
from coral_mfg.inference import adapters
from coral_mfg.inference.anomaly import (
    ARRAYS_NPZ,
    GAUSSIAN,
    METHODS,
    MODEL_JSON,
    NEIGHBOURS,
    AnomalyModel,
    Embeddings,
    ExtractorId,
    Gaussian,
    load_anomaly_model,
    normalised,
)
from coral_mfg.inference.runtime import runtime_backend
from coral_mfg.training.anomaly_report import (
    REPORT_MD,
    SCORES_PNG,
    auroc,
    draw_histograms,
    summary,
    write_report,
)
from coral_mfg.training.dataset import IMAGE_SUFFIXES, read_bgr
from coral_mfg.training.progress import Progress

DEFAULT_RATE = 0.005
DEFAULT_FOLDS = 5
DEFAULT_MEMORY = 1000
DEFAULT_MIN_IMAGES = 10


class AnomalyDataError(UserError):
    """Crops that cannot be trained or evaluated on as they are."""


# --- the extractor, in this process ---------------------------------------------------------


def extractor_path() -> Path:
    """The station's extractor (CPU build), verified against the manifest."""
    manifest = load_manifest()
    if manifest.extractor is None:
        raise AnomalyDataError("the asset manifest names no embedding extractor; reinstall "
                               "coral-mfg")
    asset = manifest.asset(manifest.extractor.cpu)
    path = manifest.path(asset.name, app_home())
    if not path.is_file():
        raise AnomalyDataError(f"the embedding extractor {path} is missing; run 'coral-mfg "
                               "fetch-assets'")
    if not verify(asset, path):
        raise AnomalyDataError(f"the embedding extractor {path} fails verification; run "
                               "'coral-mfg fetch-assets' to restore it")
    return path


class Embedder:
    """The extractor's CPU build in a LiteRT interpreter: a crop in, its embedding out,
    fed exactly as the inference processes feed a crop (resized whole, bilinear, RGB)."""

    def __init__(self, path: Path, threads: int) -> None:
        from coral_mfg.config.assets import digests_of

        with captured_output() as captured:  # LiteRT's notes (its CPU delegate) stay quiet
            try:
                self.interpreter = runtime_backend().interpreter(model_path=str(path),
                                                                 num_threads=threads)
                self.interpreter.allocate_tensors()
                self.interpreter.invoke()  # the delegate is made, and says so, on first use
            except BaseException:
                captured.keep = True
                raise
        width, height = adapters.input_size(self.interpreter)
        self._rgb = np.empty((height, width, 3), np.uint8)
        dims = int(np.prod(self.interpreter.get_output_details()[0]["shape"]))
        self.id = ExtractorId(path.name, digests_of(path)[1], dims, (width, height))

    def embed(self, bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        adapters.resize_rgb(bgr, self._rgb)
        adapters.write_rgb(self.interpreter, self._rgb)
        self.interpreter.invoke()
        return adapters.class_scores(self.interpreter)


def image_files(folder: Path, what: str, fix: str, skip: Path | None = None
                ) -> tuple[Path, ...]:
    """Every image under ``folder`` (sub-folders too, but not ``skip``: a model folder
    inside it holds its own pictures), in name order: the order of time for crops the
    harvest wrote."""
    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise AnomalyDataError(f"{what} {folder} {state}; {fix}")
    # only a folder inside it: --out the folder itself, or above it, skips nothing
    skipped = skip.resolve() if skip is not None else None
    if skipped is not None and (skipped == folder.resolve()
                                or not skipped.is_relative_to(folder.resolve())):
        skipped = None
    return tuple(sorted((p for p in folder.rglob("*")
                         if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                         and (skipped is None or not p.resolve().is_relative_to(skipped))),
                        key=str))


@dataclass(frozen=True, eq=False)
class Embedded:
    """The embeddings of the files that could be read, and those that could not."""

    embeddings: Embeddings  # (n, dims), as the extractor gave them
    files: tuple[Path, ...]
    unreadable: tuple[Path, ...]


def embed_files(embedder: Embedder, files: Sequence[Path], title: str,
                stream: Any = None) -> Embedded:
    bar = Progress(len(files), title, stream or sys.stdout)
    rows, kept, bad = [], [], []
    for path in files:
        bgr = read_bgr(path)
        if bgr is None:
            bad.append(path)
        else:
            rows.append(embedder.embed(bgr))
            kept.append(path)
        bar.add()
    dims = embedder.id.dims
    array = np.stack(rows) if rows else np.zeros((0, dims), np.float32)
    return Embedded(np.asarray(array, np.float32), tuple(kept), tuple(bad))


# --- the model of normal ----------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    method: str = GAUSSIAN
    rate: float = DEFAULT_RATE
    folds: int = DEFAULT_FOLDS
    memory: int = DEFAULT_MEMORY
    neighbours: int = 1
    min_images: int = DEFAULT_MIN_IMAGES


def coreset(embeddings: Embeddings, size: int) -> npt.NDArray[np.intp]:
    """Indices of at most ``size`` normalised rows chosen so that every row lies near one
    of them (greedy k-centre: each pick is the row farthest from those picked), starting
    from the row nearest the mean. All rows when there are no more than ``size``."""
    n = len(embeddings)
    if n <= size:
        return np.arange(n)
    mean = embeddings.mean(axis=0)
    first = int(np.argmax(embeddings @ mean))
    picked = [first]
    far = np.maximum(2.0 - 2.0 * (embeddings @ embeddings[first]), 0.0)
    for _ in range(size - 1):
        nxt = int(np.argmax(far))
        picked.append(nxt)
        far = np.minimum(far, np.maximum(2.0 - 2.0 * (embeddings @ embeddings[nxt]), 0.0))
    return np.asarray(sorted(picked), np.intp)


def folds(n: int, count: int) -> list[npt.NDArray[np.intp]]:
    """``count`` runs of consecutive indices, as equal as can be."""
    return [np.asarray(part, np.intp) for part in np.array_split(np.arange(n), count)]


def model_of(embeddings: Embeddings, recipe: Recipe, extractor: ExtractorId,
             threshold: float = 1.0) -> AnomalyModel:
    """The recipe's model of these embeddings (as the extractor gave them): one Gaussian, or
    a coreset of them."""
    if recipe.method == GAUSSIAN:
        return AnomalyModel(GAUSSIAN, threshold, extractor, recipe.rate,
                            gaussians=(Gaussian.fit(embeddings),))
    unit = normalised(embeddings)
    return AnomalyModel(NEIGHBOURS, threshold, extractor, recipe.rate,
                        memory=unit[coreset(unit, recipe.memory)],
                        neighbours=recipe.neighbours)


def held_out_distances(embeddings: Embeddings, recipe: Recipe, extractor: ExtractorId
                       ) -> tuple[Embeddings, tuple[AnomalyModel, ...]]:
    """Each row's distance from a model made of the other folds only, and those models."""
    out = np.zeros(len(embeddings), np.float32)
    models = []
    for part in folds(len(embeddings), recipe.folds):
        rest = np.setdiff1d(np.arange(len(embeddings)), part)
        models.append(model_of(embeddings[rest], recipe, extractor))
        out[part] = models[-1].distances(embeddings[part])
    return out, tuple(models)


def calibrate(held_out: npt.NDArray[np.floating], rate: float) -> float:
    """The threshold that a new good crop exceeds with a chance of at most ``rate``, if it
    is like the held-out ones: the ceil((n + 1) (1 - rate))-th smallest of the n held-out
    distances (as conformal prediction takes it), the largest of them when there are
    fewer than 1 / rate - 1. At most ``rate`` of the held-out distances exceed it."""
    ordered = np.sort(np.asarray(held_out, np.float64))
    n = len(ordered)
    rank = min(n, math.ceil((n + 1) * (1.0 - rate) - 1e-9))
    return float(ordered[rank - 1])


@dataclass(frozen=True, eq=False)
class Trained:
    model: AnomalyModel
    training: Embeddings  # each kept crop's distance from the final model
    held_out: Embeddings  # each kept crop's distance from a model without its fold
    duplicates: int


def fit(embedded: Embedded, extractor: ExtractorId, recipe: Recipe) -> Trained:
    """The model of normal and its calibrated threshold, from good crops' embeddings: the
    folds' Gaussians (see :mod:`coral_mfg.inference.anomaly` for why), or the nearest
    neighbours among every crop, whose distances are never larger than a fold's."""
    _, first = np.unique(embedded.embeddings, axis=0, return_index=True)
    keep = np.sort(first)
    duplicates = len(embedded.embeddings) - len(keep)
    good = embedded.embeddings[keep]
    needed = max(recipe.min_images, 2 * recipe.folds)
    if len(good) < needed:
        extra = f" ({duplicates} identical pictures counted once)" if duplicates else ""
        raise AnomalyDataError(f"only {len(good)} different good crop(s) could be read{extra}, "
                               f"fewer than {needed}; add crops of more good parts (or lower "
                               "--min_images)")
    held_out, fold_models = held_out_distances(good, recipe, extractor)
    threshold = calibrate(held_out, recipe.rate)
    if not threshold > 0:
        raise AnomalyDataError("every held-out good crop is identical to another: harvest "
                               "crops of more parts, or of one part from more angles")
    if recipe.method == GAUSSIAN:
        model = AnomalyModel(GAUSSIAN, threshold, extractor, recipe.rate,
                             gaussians=tuple(g for m in fold_models for g in m.gaussians))
    else:
        model = model_of(good, recipe, extractor, threshold)
    return Trained(model, model.distances(good), held_out, duplicates)


# --- train-anomaly --------------------------------------------------------------------------


def train_parser() -> Parser:
    p = Parser(prog="coral-mfg train-anomaly",
               description="Learn what good parts look like from a folder of crops of good "
               "parts only (as --harvest_dir saves them; sub-folders are read too), and "
               "calibrate the threshold above which an inspected object is anomalous. Runs "
               "the station's embedding extractor on this CPU; no TensorFlow.")
    p.add_argument("good", metavar="GOOD_DIR", type=Path)
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="where the model and its report go (then: coral-mfg --anomaly DIR)")
    p.add_argument("--method", choices=METHODS, default=GAUSSIAN,
                   help="gaussian: the Mahalanobis distance from the good crops' mean (the "
                   "default); neighbours: the distance to the nearest good crop")
    p.add_argument("--false_alarm_rate", type=_rate, default=DEFAULT_RATE, metavar="SHARE",
                   help="the share of good crops allowed above the threshold (default "
                   f"{DEFAULT_RATE:g}, that is {DEFAULT_RATE * 100:.1f} %%)")
    p.add_argument("--folds", type=_bounded(2, 20), default=DEFAULT_FOLDS, metavar="N",
                   help=f"held-out folds of consecutive crops (default {DEFAULT_FOLDS})")
    p.add_argument("--memory", type=_bounded(1, 100_000), default=DEFAULT_MEMORY,
                   metavar="N", help="neighbours: embeddings kept, chosen to cover all of "
                   f"them (default {DEFAULT_MEMORY})")
    p.add_argument("--neighbours", type=_bounded(1, 50), default=1, metavar="K",
                   help="neighbours: a crop's distance is the mean over its K nearest good "
                   "ones (default 1)")
    p.add_argument("--min_images", type=_bounded(2, 1_000_000), default=DEFAULT_MIN_IMAGES,
                   metavar="N", help=f"the fewest good crops (default {DEFAULT_MIN_IMAGES})")
    p.add_argument("--cpu_threads", type=_bounded(1, 256), default=os.cpu_count() or 1,
                   metavar="N", help="threads of the extractor (default: every core)")
    return p


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"a whole number from {low} to {high}, not "
                                             f"{text!r}")
        return value

    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"a share above 0 and below 0.5 (0.01 is 1 %), not "
                                         f"{text!r}")
    return value


def train_main(argv: Sequence[str]) -> int:
    args = train_parser().parse_args(argv)
    good: Path = args.good.expanduser().resolve()
    out: Path = args.out.expanduser()
    recipe = Recipe(args.method, args.false_alarm_rate, args.folds, args.memory,
                    args.neighbours, args.min_images)
    files = image_files(good, "good crops folder", "pass a folder of crops of good parts",
                        skip=out)
    if len(files) < recipe.min_images:
        raise AnomalyDataError(f"good crops folder {good} holds {len(files)} image(s) "
                               f"({', '.join(sorted(IMAGE_SUFFIXES))}), fewer than "
                               f"{recipe.min_images}; add crops of good parts (or lower "
                               "--min_images)")
    path = extractor_path()
    with output_folder(out, "output folder", "--out"):
        started = time.monotonic()
        embedder = Embedder(path, args.cpu_threads)
        embedded = embed_files(embedder, files, f"embedding {len(files)} good crops")
        embed_s = time.monotonic() - started
        if embedded.unreadable:
            print(f"skipped {len(embedded.unreadable)} unreadable image(s), e.g. "
                  f"{embedded.unreadable[0]}")
        print(f"calibrating on {args.folds} held-out folds")
        trained = fit(embedded, embedder.id, recipe)
        report = _report(good, out, embedded, trained, recipe,
                         seconds=(embed_s, time.monotonic() - started))
        trained.model.save(out, {"good_dir": str(good), "crops": len(trained.training),
                                 "held_out_false_alarm_rate":
                                 report["calibration"]["held_out_false_alarm_rate"]})
        draw_histograms(out / SCORES_PNG, trained.training, trained.held_out,
                        trained.model.threshold, title=f"good crops of {good.name}")
        write_report(out, report)
        print(summary(report, out))
        return 0


def _report(good: Path, out: Path, embedded: Embedded, trained: Trained, recipe: Recipe, *,
            seconds: tuple[float, float]) -> dict[str, Any]:
    model = trained.model
    held = trained.held_out
    alarms = int(np.sum(held > model.threshold))
    embed_s, total_s = seconds
    return {
        "good_dir": str(good),
        "extractor": model.extractor.to_dict(),
        "images": {"found": len(embedded.files) + len(embedded.unreadable),
                   "unreadable": len(embedded.unreadable),
                   "unreadable_files": [str(p) for p in embedded.unreadable[:20]],
                   "duplicates": trained.duplicates, "used": len(held)},
        "method": model.method,
        "memory": model.size,
        "neighbours": model.neighbours,
        "calibration": {
            "folds": recipe.folds, "false_alarm_rate": recipe.rate,
            "threshold": round(model.threshold, 6), "held_out": len(held),
            "held_out_false_alarms": alarms,
            "held_out_false_alarm_rate": round(alarms / len(held), 6),
            "smallest_measurable_rate": round(1.0 / len(held), 6),
        },
        "scores": {"training": _stats(trained.training), "held_out": _stats(held)},
        "histogram": _histogram(trained.training, held, model.threshold),
        "seconds": {"embedding": round(embed_s, 2), "total": round(total_s, 2),
                    "per_crop_ms": round(1000.0 * embed_s / max(len(embedded.files), 1), 2)},
        "files": {"model": MODEL_JSON, "arrays": ARRAYS_NPZ, "histogram": SCORES_PNG,
                  "report": REPORT_MD},
        "run_command": shlex.join(["coral-mfg", "--anomaly", str(out)]),
    }


def _stats(values: npt.NDArray[np.floating]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"min": round(float(v.min()), 6), "median": round(float(np.median(v)), 6),
            "p99": round(float(np.quantile(v, 0.99)), 6), "max": round(float(v.max()), 6)}


HISTOGRAM_BINS = 30


def _histogram(training: Embeddings, held: Embeddings, threshold: float) -> dict[str, Any]:
    top = max(float(held.max()), float(training.max()), threshold) * 1.1
    edges = np.linspace(0.0, top, HISTOGRAM_BINS + 1)
    return {"edges": [round(float(e), 6) for e in edges],
            "training": np.histogram(training, edges)[0].tolist(),
            "held_out": np.histogram(held, edges)[0].tolist()}


# --- eval-anomaly ---------------------------------------------------------------------------


def eval_parser() -> Parser:
    p = Parser(prog="coral-mfg eval-anomaly",
               description="Score a folder of labelled crops, LABELLED_DIR/good and "
               "LABELLED_DIR/bad, with an anomaly model: AUROC, and the false-alarm and "
               "miss rates at the model's threshold.")
    p.add_argument("model", metavar="DIR", type=Path, help="the --out folder of train-anomaly")
    p.add_argument("labelled", metavar="LABELLED_DIR", type=Path)
    p.add_argument("--cpu_threads", type=_bounded(1, 256), default=os.cpu_count() or 1,
                   metavar="N", help="threads of the extractor (default: every core)")
    p.add_argument("--json", action="store_true", help="print one JSON line instead")
    return p


@dataclass(frozen=True)
class Evaluation:
    good: int
    bad: int
    unreadable: int
    auroc: float
    false_alarm_rate: float
    miss_rate: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"good": self.good, "bad": self.bad, "unreadable": self.unreadable,
                "auroc": round(self.auroc, 4),
                "false_alarm_rate": round(self.false_alarm_rate, 4),
                "miss_rate": round(self.miss_rate, 4), "threshold": round(self.threshold, 6)}


def evaluate(model: AnomalyModel, good: Embeddings, bad: Embeddings,
             unreadable: int = 0) -> Evaluation:
    g, b = model.distances(good), model.distances(bad)
    return Evaluation(len(g), len(b), unreadable, auroc(g, b),
                      float(np.mean(g > model.threshold)), float(np.mean(b <= model.threshold)),
                      model.threshold)


def eval_main(argv: Sequence[str]) -> int:
    args = eval_parser().parse_args(argv)
    model = load_anomaly_model(args.model.expanduser(), where="anomaly model")
    labelled: Path = args.labelled.expanduser()
    fix = "pass a folder with good/ and bad/ sub-folders of crops"
    sets = {name: image_files(labelled / name, f"folder {name}/ of", fix)
            for name in ("good", "bad")}
    embedder = Embedder(extractor_path(), args.cpu_threads)
    quiet = open(os.devnull, "w") if args.json else None  # noqa: SIM115 - closed below
    try:
        found = {name: embed_files(embedder, files, f"embedding {len(files)} {name} crops",
                                   quiet) for name, files in sets.items()}
    finally:
        if quiet is not None:
            quiet.close()
    for name, embedded in found.items():
        if not len(embedded.files):
            raise AnomalyDataError(f"{labelled / name} holds no readable image; {fix}")
    unreadable = sum(len(e.unreadable) for e in found.values())
    result = evaluate(model, found["good"].embeddings, found["bad"].embeddings, unreadable)
    if args.json:
        import json

        print(json.dumps(result.to_dict()))
        return 0
    if unreadable:
        print(f"skipped {unreadable} unreadable image(s)")
    print(f"{result.good} good and {result.bad} bad crops; threshold {result.threshold:.4f} "
          f"(calibrated for {model.false_alarm_rate:.1%} false alarms)")
    print(f"AUROC {result.auroc:.4f}")
    print(f"false-alarm rate {result.false_alarm_rate:.2%} "
          f"({round(result.false_alarm_rate * result.good)} of {result.good} good crops above "
          "the threshold)")
    print(f"miss rate {result.miss_rate:.2%} ({round(result.miss_rate * result.bad)} of "
          f"{result.bad} bad crops at or below it)")
    return 0

