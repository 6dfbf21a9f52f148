#!/usr/bin/env bash
# Set up, then run the inspection on the bundled sample videos. With a display
# the window opens (q quits); without one the run is headless and writes the
# annotated side-by-side recording to out/demo.mp4 and the event log to
# out/events.jsonl. Extra arguments go to coral-mfg.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p out
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  exec .venv/bin/coral-mfg --events out/events.jsonl "$@"
fi
exec .venv/bin/coral-mfg --headless --output out/demo.mp4 --events out/events.jsonl "$@"
