"""The asset manifest, and fetching files from a mirror or their official sources.

Every file is verified against the manifest before it replaces anything, and
is written through a temporary file and an atomic rename, so an interrupted or
corrupt download never leaves a partial file where the application looks.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from coral_mfg.core.errors import AssetError
from coral_mfg.core.files import replacing

ENV_MIRROR = "CORAL_MFG_ASSETS"
ENV_HOME = "CORAL_MFG_HOME"
KIND_DIRS = {"model": "models", "labels": "models", "video": "videos", "image": "images"}
DOWNLOAD_TIMEOUT_S = 20.0
_CHUNK = 1 << 20


def app_home() -> Path:
    """Where ``models/``, ``videos/`` and ``configs/`` live.

    ``CORAL_MFG_HOME`` wins; a source checkout uses itself; otherwise the
    current directory.
    """
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "coral_mfg").is_dir():
        return checkout
    return Path.cwd()


@dataclass(frozen=True)
class Digest:
    """One acceptable content of a file: every field given must match."""

    size: int | None = None
    sha256: str | None = None
    git_blob: str | None = None


@dataclass(frozen=True)
class Asset:
    """One file the application needs, where to get it, and how to know it is the right one."""

    name: str
    kind: str
    url: str
    accept: tuple[Digest, ...]
    archive_member: str | None = None
    optional: bool = False
    note: str = ""

    @property
    def subdir(self) -> str:
        return KIND_DIRS[self.kind]


@dataclass(frozen=True)
class ModelSet:
    """A detector or classifier: its CPU and Edge TPU builds and its labels."""

    name: str
    description: str
    cpu: str | None
    edgetpu: str | None
    labels: str
    worker_threshold: float | None = None
    inspection_threshold: float | None = None

    @property
    def title(self) -> str:
        """Its name for people: the description without the details in brackets."""
        return self.description.split(" (", 1)[0]


@dataclass(frozen=True)
class Manifest:
    """Every asset, the detectors in order of preference, the sample videos (assets.toml)."""

    assets: tuple[Asset, ...]
    detectors: tuple[ModelSet, ...]
    classifier: ModelSet
    samples: dict[str, str]

    def asset(self, name: str) -> Asset:
        for a in self.assets:
            if a.name == name:
                return a
        raise KeyError(name)

    def path(self, name: str, home: Path | None = None) -> Path:
        return (home or app_home()) / self.asset(name).subdir / name


def load_manifest(text: str | None = None) -> Manifest:
    if text is None:
        text = resources.files("coral_mfg.config").joinpath("assets.toml").read_text("utf-8")
    data = tomllib.loads(text)
    assets = tuple(
        Asset(
            name=a["name"],
            kind=a["kind"],
            url=a["url"],
            accept=tuple(Digest(**d) for d in a["accept"]),
            archive_member=a.get("archive_member"),
            optional=a.get("optional", False),
            note=a.get("note", ""),
        )
        for a in data["assets"]
    )
    return Manifest(
        assets=assets,
        detectors=tuple(ModelSet(**_model_fields(d)) for d in data["detectors"]),
        classifier=ModelSet(**_model_fields(data["classifier"])),
        samples=dict(data["samples"]),
    )


def _model_fields(d: dict[str, Any]) -> dict[str, Any]:
    fields = {"cpu": None, "edgetpu": None, "description": ""} | d
    return fields


def digests_of(data_path: Path) -> tuple[int, str, str]:
    """(size, sha256, git blob id) of a file, read once."""
    size = data_path.stat().st_size
    sha = hashlib.sha256()
    blob = hashlib.sha1(f"blob {size}\0".encode())
    with data_path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            blob.update(chunk)
    return size, sha.hexdigest(), blob.hexdigest()


def verify(asset: Asset, path: Path) -> bool:
    """True when ``path`` matches one of the asset's accepted digests."""
    if not path.is_file():
        return False
    size, sha, blob = digests_of(path)
    return any(
        (d.size is None or d.size == size)
        and (d.sha256 is None or d.sha256 == sha)
        and (d.git_blob is None or d.git_blob == blob)
        for d in asset.accept
    )


@dataclass(frozen=True)
class FetchResult:
    """What fetching one asset did, for the report printed per file."""

    asset: Asset
    status: str  # "present", "fetched", "missing"
    source: str = ""
    detail: str = ""


def _mirror_candidates(mirror: str, asset: Asset) -> list[str]:
    if mirror.startswith(("http://", "https://")):
        base = mirror.rstrip("/")
        return [f"{base}/{asset.subdir}/{asset.name}", f"{base}/{asset.name}"]
    root = Path(mirror).expanduser()
    return [str(root / asset.subdir / asset.name), str(root / asset.name)]


def _copy_into(source: str, tmp: Path, member: str | None) -> None:
    """Copy a local file or URL to ``tmp``, extracting ``member`` from a zip archive."""
    if source.startswith(("http://", "https://")):
        request = urllib.request.Request(source, headers={"User-Agent": "coral-mfg"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            if member is None:
                with tmp.open("wb") as out:
                    shutil.copyfileobj(response, out, _CHUNK)
                return
            payload = io.BytesIO(response.read())
    else:
        if member is None:
            shutil.copyfile(source, tmp)
            return
        payload = io.BytesIO(Path(source).read_bytes())
    with zipfile.ZipFile(payload) as archive:
        names = [n for n in archive.namelist() if n == member or n.endswith("/" + member)]
        if not names:
            raise AssetError(f"{source} has no member {member}")
        with archive.open(names[0]) as src, tmp.open("wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)


class _RejectedError(Exception):
    """A source that did not give a verified file; the message says why."""


def _try_source(asset: Asset, source: str, target: Path, member: str | None) -> str | None:
    """Fetch one source into ``target`` atomically; the failure reason, or None."""
    if not source.startswith(("http://", "https://")) and not Path(source).is_file():
        return "not there"
    try:
        with replacing(target) as tmp:
            try:
                _copy_into(source, tmp, member)
            except urllib.error.HTTPError as exc:
                raise _RejectedError(f"HTTP {exc.code}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                raise _RejectedError(f"unreachable ({getattr(exc, 'reason', exc)})") from None
            except (OSError, zipfile.BadZipFile, AssetError) as exc:
                raise _RejectedError(f"unreadable ({exc})") from None
            if not verify(asset, tmp):
                raise _RejectedError("digest mismatch, rejected")
    except _RejectedError as exc:
        return str(exc)
    return None


def fetch_asset(
    asset: Asset, home: Path, mirror: str | None, download: bool = True
) -> FetchResult:
    target = home / asset.subdir / asset.name
    if verify(asset, target):
        return FetchResult(asset, "present", str(target))
    tried: list[str] = []
    if target.exists():
        tried.append(f"{target}: digest mismatch, will be replaced")
    sources: list[tuple[str, str | None]] = []
    if mirror:
        sources += [(s, None) for s in _mirror_candidates(mirror, asset)]
    if download:
        sources.append((asset.url, asset.archive_member))
    for source, member in sources:
        failure = _try_source(asset, source, target, member)
        if failure is None:
            return FetchResult(asset, "fetched", source)
        if failure != "not there":
            tried.append(f"{source}: {failure}")
    if mirror and not any(mirror in t for t in tried):
        tried.append(f"not in mirror {mirror}")
    return FetchResult(asset, "missing", "", "; ".join(tried) or "no source")


def fetch_all(
    manifest: Manifest,
    home: Path,
    mirror: str | None,
    download: bool = True,
    names: Iterable[str] | None = None,
) -> list[FetchResult]:
    wanted = set(names) if names is not None else None
    return [
        fetch_asset(a, home, mirror, download)
        for a in manifest.assets
        if wanted is None or a.name in wanted
    ]


def available(manifest: Manifest, home: Path, name: str | None) -> bool:
    return name is not None and (home / manifest.asset(name).subdir / name).is_file()


def not_installed(manifest: Manifest, chosen: ModelSet) -> str | None:
    """One line for the detectors preferred to ``chosen`` that are not installed
    ("SSDLite MobileDet not installed: using SSD MobileNet v1"), or None."""
    skipped = manifest.detectors[:manifest.detectors.index(chosen)]
    if not skipped:
        return None
    return f"{' and '.join(d.title for d in skipped)} not installed: using {chosen.title}"


def usable_pairs(
    manifest: Manifest, home: Path, edgetpu: bool = False
) -> list[tuple[ModelSet, str, str]]:
    """(detector set, detector file, classifier file) pairs that can run, best first.

    With ``edgetpu`` the Edge TPU builds count too; otherwise only CPU builds.
    """
    pairs: list[tuple[ModelSet, str, str]] = []
    clf = manifest.classifier
    for det in manifest.detectors:
        for variant in ("edgetpu", "cpu") if edgetpu else ("cpu",):
            d_file: str | None = getattr(det, variant)
            c_file: str | None = getattr(clf, variant) or clf.cpu
            if (
                d_file is not None
                and c_file is not None
                and available(manifest, home, d_file)
                and available(manifest, home, c_file)
                and available(manifest, home, det.labels)
                and available(manifest, home, clf.labels)
            ):
                pairs.append((det, d_file, c_file))
    return pairs
