#!/usr/bin/env bash
# Set up, then run the inspection on the bundled sample videos. With a display
# it opens the window; without one it runs headless and writes out/demo.mp4
# and out/events.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  exec .venv/bin/coral-mfg "$@"
fi
mkdir -p out
exec .venv/bin/coral-mfg --headless --output out/demo.mp4 --events out/events.jsonl "$@"
