"""A model of normal: embeddings of good parts, and how far a new crop lies from them.

``coral-mfg train-anomaly`` writes it as a folder: ``anomaly.json`` (the
method, the threshold, how it was calibrated, and which extractor made the
embeddings) and ``model.npz`` (the method's arrays). Two methods:

- ``gaussian`` (the default): the good crops' embeddings as a Gaussian, its
  covariance shrunk towards a multiple of the identity (Ledoit and Wolf's
  estimate, so a few dozen crops in 1024 dimensions still give an invertible
  one); a crop's distance is its Mahalanobis distance from their mean (after
  Rippel, Mertens and Merhof, who model pre-trained features of good parts so). It
  weighs most the directions in which good parts hardly vary, which is where a
  defect moves an embedding; on the sample apples it separates painted
  defects from held-out good crops better than the nearest neighbour does.
  The model is the Gaussians of the calibration's folds, each fitted without
  one fold, and a crop's distance is the mean of its distances from them. A
  shrunk Gaussian's distances grow with the number of crops it was fitted on
  (the more crops, the less shrinking, the smaller the variance it allows
  outside them), so a threshold calibrated on the folds' held-out crops holds
  only for models of as many crops: the folds' own models. One Gaussian of
  every crop would put more new good crops above that threshold than asked
  (on synthetic embeddings, 20 to 60 % instead of 0.5 %).
- ``neighbours``: a coreset of the L2-normalised embeddings; a crop's distance
  is the Euclidean distance of its normalised embedding to the nearest kept
  one (the mean over the ``neighbours`` nearest), 0 to 2.

A crop's *score* is its distance over the threshold, so 1.0 is the threshold
whatever the model, and a consumer of the events can judge a score without
knowing the model.

Embeddings from another extractor live in another space: a folder records the
digest of the extractor it was trained with, and is refused by any other.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from coral_mfg.config.assets import Manifest, load_manifest
from coral_mfg.core.errors import UserError

FORMAT = 1
MODEL_JSON = "anomaly.json"
ARRAYS_NPZ = "model.npz"
GAUSSIAN, NEIGHBOURS = "gaussian", "neighbours"
METHODS = (GAUSSIAN, NEIGHBOURS)
RETRAIN = "train it again with 'coral-mfg train-anomaly'"

Embeddings = npt.NDArray[np.float32]


class AnomalyModelError(UserError):
    """An anomaly model folder that cannot be used as it is."""


@dataclass(frozen=True)
class ExtractorId:
    """Which extractor made a model's embeddings: its CPU build's file name and digest, the
    embedding's length and the picture size it takes."""

    file: str
    sha256: str
    dims: int
    input_size: tuple[int, int]  # (width, height)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "dims": self.dims,
                "input_size": list(self.input_size)}

    @classmethod
    def of(cls, data: Any) -> ExtractorId:
        w, h = data["input_size"]
        return cls(str(data["file"]), str(data["sha256"]), int(data["dims"]), (int(w), int(h)))


def station_extractor(manifest: Manifest | None = None) -> tuple[str, tuple[str, ...]]:
    """The station's extractor: its CPU build's file name and the digests it may have."""
    manifest = manifest or load_manifest()
    if manifest.extractor is None:
        raise AnomalyModelError("the asset manifest names no embedding extractor; reinstall "
                                "coral-mfg")
    asset = manifest.asset(manifest.extractor.cpu)
    return asset.name, tuple(d.sha256 for d in asset.accept if d.sha256)


def normalised(embeddings: npt.NDArray[np.floating]) -> Embeddings:
    """Rows scaled to length 1 (a row of zeros stays zeros)."""
    e = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    return np.asarray(e / np.maximum(norms, 1e-12), np.float32)


def nearest(query: Embeddings, memory: Embeddings, neighbours: int = 1) -> Embeddings:
    """Per normalised query row, the mean Euclidean distance to its ``neighbours`` nearest
    rows of ``memory`` (normalised too): from their dot products, one matrix product."""
    if len(query) == 0:
        return np.zeros(0, np.float32)
    dots = query @ memory.T
    squared = np.maximum(2.0 - 2.0 * dots, 0.0)
    k = min(neighbours, memory.shape[0])
    if k == 1:
        best = squared.min(axis=1)
        return np.asarray(np.sqrt(best), np.float32)
    part = np.partition(squared, k - 1, axis=1)[:, :k]
    return np.asarray(np.sqrt(part).mean(axis=1), np.float32)


def _shrinkage(xc: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Ledoit and Wolf's shrinkage of the sample covariance of centred rows ``xc``
    towards ``mu`` times the identity: (the share taken from ``mu`` I, ``mu``), the share
    that minimises the expected error. Worked out from the rows' Gram matrix, so a few
    dozen crops cost a few dozen squared, not 1024 squared."""
    n, p = xc.shape
    gram = xc @ xc.T
    mu = float(np.trace(gram)) / (n * p)
    sample_sq = float(np.sum(gram * gram)) / (n * n)  # |S|^2 (Frobenius)
    delta = (sample_sq - 2.0 * mu * float(np.trace(gram)) / n + mu * mu * p) / p
    # the mean squared distance of each row's outer product from S
    norms = np.diag(gram)
    spread = (float(np.sum(norms ** 2)) - float(np.sum(gram * gram)) / n) / (p * n * n)
    shrink = 1.0 if delta <= 0 else min(max(spread, 0.0), delta) / delta
    return shrink, mu


@dataclass(frozen=True, eq=False)
class Gaussian:
    """The good crops' embeddings as a Gaussian: their mean and their shrunk covariance,
    kept as its few directions of its own variance (``components``, ``variances``) and the
    one variance of every other direction (``rest``), which is what shrinking towards a
    multiple of the identity leaves. A distance then costs a product with those few
    directions instead of a 1024 x 1024 matrix."""

    mean: Embeddings
    components: Embeddings  # (k, dims), orthonormal rows
    variances: Embeddings  # (k,)
    rest: float

    @classmethod
    def fit(cls, embeddings: npt.NDArray[np.floating]) -> Gaussian:
        x = np.asarray(embeddings, np.float64)
        n, _ = x.shape
        mean = x.mean(axis=0)
        xc = x - mean
        shrink, mu = _shrinkage(xc)
        _, sigma, vt = np.linalg.svd(xc, full_matrices=False)
        own = sigma ** 2 / n  # the sample covariance's variances along vt's rows
        keep = own > 1e-12 * max(float(own.max(initial=0.0)), 1e-30)
        rest = max(shrink * mu, 1e-12 * max(mu, 1e-30))
        variances = rest + (1.0 - shrink) * own[keep]
        return cls(np.asarray(mean, np.float32), np.asarray(vt[keep], np.float32),
                   np.asarray(variances, np.float32), float(rest))

    def distances(self, embeddings: npt.NDArray[np.floating]) -> Embeddings:
        d = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1) - self.mean
        along = d @ self.components.T
        inside = np.sum(along * along, axis=1)
        outside = np.maximum(np.sum(d * d, axis=1) - inside, 0.0)
        squared = np.sum(along * along / self.variances, axis=1) + outside / self.rest
        return np.asarray(np.sqrt(np.maximum(squared, 0.0)), np.float32)


@dataclass(frozen=True, eq=False)
class AnomalyModel:
    """A model of good crops and the distance above which a crop is anomalous: the folds'
    Gaussians, or kept embeddings (``memory``) and their nearest ``neighbours``."""

    method: str
    threshold: float  # a distance
    extractor: ExtractorId
    false_alarm_rate: float  # the rate the threshold was calibrated for
    gaussians: tuple[Gaussian, ...] = ()  # one per calibration fold
    memory: Embeddings | None = None  # (kept, dims), normalised rows
    neighbours: int = 1
    folder: Path | None = None
    info: dict[str, Any] | None = None  # the rest of anomaly.json: how it was made

    @property
    def size(self) -> int:
        """Embeddings kept (neighbours), or the number of Gaussians."""
        return len(self.gaussians) if self.memory is None else len(self.memory)

    def distances(self, embeddings: npt.NDArray[np.floating]) -> Embeddings:
        """Each embedding's distance from the good crops, as the extractor gave it: the mean
        of its distances from the Gaussians, or to the nearest kept embeddings."""
        if self.gaussians:
            total = self.gaussians[0].distances(embeddings)
            for g in self.gaussians[1:]:
                total = total + g.distances(embeddings)
            return np.asarray(total / len(self.gaussians), np.float32)
        assert self.memory is not None
        return nearest(normalised(embeddings), self.memory, self.neighbours)

    def scores(self, embeddings: npt.NDArray[np.floating]) -> Embeddings:
        """Distances over the threshold: above 1.0 is anomalous."""
        return np.asarray(self.distances(embeddings) / self.threshold, np.float32)

    def save(self, folder: Path, info: dict[str, Any]) -> None:
        """Write the folder's model files; ``info`` (how it was made) goes into the json."""
        gs = self.gaussians
        arrays = ({"mean": np.stack([g.mean for g in gs]),
                   "components": np.concatenate([g.components for g in gs]),
                   "variances": np.concatenate([g.variances for g in gs]),
                   "sizes": np.asarray([len(g.variances) for g in gs], np.float32),
                   "rest": np.asarray([g.rest for g in gs], np.float32)}
                  if gs else {"memory": self.memory})
        with (folder / ARRAYS_NPZ).open("wb") as f:
            np.savez(f, **arrays)
        data = {"format": FORMAT, "method": self.method, "extractor": self.extractor.to_dict(),
                "threshold": self.threshold, "neighbours": self.neighbours,
                "false_alarm_rate": self.false_alarm_rate, **info}
        (folder / MODEL_JSON).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def load_anomaly_model(folder: Path, *, manifest: Manifest | None = None,
                       where: str = "--anomaly") -> AnomalyModel:
    """A folder written by ``train-anomaly``, checked against the station's extractor;
    one line naming the folder and the fix otherwise."""
    if folder.is_file():
        raise AnomalyModelError(f"{where} {folder} is a file; pass the folder it is in, the "
                                "--out folder of 'coral-mfg train-anomaly'")
    if not folder.is_dir():
        raise AnomalyModelError(f"{where} {folder}: no such folder; pass the --out folder of "
                                "'coral-mfg train-anomaly'")
    path = folder / MODEL_JSON
    if not path.is_file():
        raise AnomalyModelError(f"{where} {folder} is not an anomaly model (no {MODEL_JSON} "
                                "in it); pass the --out folder of 'coral-mfg train-anomaly'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data["format"]
        method = data["method"]
        extractor = ExtractorId.of(data["extractor"])
        threshold = float(data["threshold"])
        neighbours = int(data["neighbours"])
        rate = float(data["false_alarm_rate"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise AnomalyModelError(f"{where} {path} cannot be read ({why}); {RETRAIN}") from None
    if version != FORMAT:
        raise AnomalyModelError(f"{where} {path} is of format {version!r}, this coral-mfg "
                                f"reads format {FORMAT}; {RETRAIN}")
    if method not in METHODS:
        raise AnomalyModelError(f"{where} {path}: unknown method {method!r}; {RETRAIN}")
    name, digests = station_extractor(manifest)
    if extractor.file != name or extractor.sha256 not in digests:
        ours = f"{name} (sha256 {digests[0][:12]}...)" if digests else name
        raise AnomalyModelError(
            f"{where} {folder} was trained on embeddings of {extractor.file} (sha256 "
            f"{extractor.sha256[:12]}...), not of this station's extractor {ours}; {RETRAIN}")
    gaussians, memory = _arrays(folder, method, extractor, where)
    if not (math.isfinite(threshold) and threshold > 0) or neighbours < 1 or not 0 < rate < 1:
        raise AnomalyModelError(f"{where} {path}: threshold, neighbours or false_alarm_rate "
                                f"out of range; {RETRAIN}")
    info = {k: v for k, v in data.items() if k not in {
        "format", "method", "extractor", "threshold", "neighbours", "false_alarm_rate"}}
    return AnomalyModel(method, threshold, extractor, rate, gaussians, memory, neighbours,
                        folder, info)


def _arrays(folder: Path, method: str, extractor: ExtractorId, where: str
            ) -> tuple[tuple[Gaussian, ...], Embeddings | None]:
    path = folder / ARRAYS_NPZ
    dims = extractor.dims
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k], np.float32) for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        # numpy's own words for a file that is not a plain .npz invite loading it unsafely
        why = "not an array file train-anomaly wrote" if "pickle" in str(exc) else str(exc)
        raise AnomalyModelError(f"{where} {path} cannot be read ({why}); {RETRAIN}") from None
    gaussians = _gaussians(arrays, dims) if method == GAUSSIAN else None
    memory = arrays.get("memory")
    fits = (gaussians is not None if method == GAUSSIAN else
            memory is not None and memory.ndim == 2 and memory.shape[0] > 0
            and memory.shape[1] == dims)
    if not fits:
        found = ", ".join(f"{k} {v.shape}" for k, v in arrays.items()) or "nothing"
        raise AnomalyModelError(f"{where} {path} holds {found}, not a {method} model of "
                                f"{dims}-value embeddings; {RETRAIN}")
    if gaussians is not None:
        return gaussians, None
    assert memory is not None
    return (), normalised(memory)


def _gaussians(arrays: dict[str, Embeddings], dims: int) -> tuple[Gaussian, ...] | None:
    """The Gaussians stacked in ``arrays`` (each one's mean and rest, their components and
    variances one after another, ``sizes`` of each), or None if they do not fit."""
    mean, parts, spread = arrays.get("mean"), arrays.get("components"), arrays.get("variances")
    sizes, rest = arrays.get("sizes"), arrays.get("rest")
    if (mean is None or parts is None or spread is None or sizes is None or rest is None
            or mean.ndim != 2 or mean.shape[1] != dims or len(mean) == 0
            or sizes.shape != (len(mean),) or rest.shape != (len(mean),)
            or parts.ndim != 2 or parts.shape[1] != dims or spread.shape != (len(parts),)
            or int(sizes.sum()) != len(parts) or not bool(np.all(sizes >= 0))
            or not bool(np.all(spread > 0)) or not bool(np.all(rest > 0))):
        return None
    ends = np.cumsum(sizes.astype(np.int64))
    return tuple(Gaussian(mean[i], parts[end - int(n):end], spread[end - int(n):end],
                          float(rest[i]))
                 for i, (n, end) in enumerate(zip(sizes, ends, strict=True)))
