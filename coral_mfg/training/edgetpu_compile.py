"""Co-compiling the new classifier with the detector for the Edge TPU.

Both models go to ``edgetpu_compiler`` in one call, detector first, so the
compiler gives them one plan of the TPU's on-chip memory and both stay cached
while the two streams alternate; compiled separately, each would evict the
other's parameters on every switch.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

COMPILER = "edgetpu_compiler"
TIMEOUT_S = 600.0
INSTALL = ("install it from Coral's apt repository (x86-64 Debian or Ubuntu): "
           "https://coral.ai/docs/edgetpu/compiler/ (package edgetpu-compiler)")
_KEYS = {
    "Input model": "input",
    "Output model": "output",
    "On-chip memory used for caching model parameters": "on_chip_used",
    "On-chip memory remaining for caching model parameters": "on_chip_remaining",
    "Off-chip memory used for streaming uncached model parameters": "off_chip_streamed",
    "Number of Edge TPU subgraphs": "subgraphs",
    "Total number of operations": "operations",
}
_LINE = re.compile(r"^\s*([^:]+?)\s*:\s*(.+?)\s*$")


def command(detector: Path, classifier: Path, out_dir: Path) -> list[str]:
    return [COMPILER, "--out_dir", str(out_dir), str(detector), str(classifier)]


def command_text(detector: Path, classifier: Path, out_dir: Path) -> str:
    return shlex.join(command(detector, classifier, out_dir))


def parse_summary(text: str) -> list[dict[str, str]]:
    """One record per model the compiler reports, in its order: memory figures and counts."""
    models: list[dict[str, str]] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None or m.group(1) not in _KEYS:
            continue
        key = _KEYS[m.group(1)]
        if key == "input":
            models.append({})
        if models:
            models[-1][key] = m.group(2)
    return models


@dataclass(frozen=True)
class Compiled:
    """What the compiler made, or why it did not."""

    ok: bool
    models: tuple[dict[str, str], ...]
    message: str  # the failure in one line, or ""
    log: str  # the compiler's output, kept beside the models


def co_compile(detector: Path, classifier: Path, out_dir: Path) -> Compiled | None:
    """Run the compiler when it is on the PATH; None when it is not."""
    exe = shutil.which(COMPILER)
    if exe is None:
        return None
    args = [exe, *command(detector, classifier, out_dir)[1:]]
    try:
        run = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S,
                             check=False)
    except subprocess.TimeoutExpired:
        return Compiled(False, (), f"{COMPILER} did not finish in {TIMEOUT_S:.0f} s", "")
    except OSError as exc:
        return Compiled(False, (), f"{COMPILER} could not be started ({exc.strerror})", "")
    log = run.stdout + run.stderr
    models = tuple(parse_summary(run.stdout))
    missing = [p.name for p in (detector, classifier)
               if not (out_dir / f"{p.stem}_edgetpu.tflite").is_file()]
    if run.returncode != 0 or missing:
        last = next((ln.strip() for ln in reversed(log.splitlines()) if ln.strip()), "")
        why = f"exit status {run.returncode}" if run.returncode else f"no {missing[0]}"
        return Compiled(False, models, f"{COMPILER} failed ({why}): {last}", log)
    return Compiled(True, models, "", log)
