#!/usr/bin/env bash
# Set up, then run the inspection on the bundled sample videos: headless, with
# the annotated side-by-side recording in out/demo.mp4 and the event log in
# out/events.jsonl. Extra arguments go to coral-mfg.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p out
exec .venv/bin/coral-mfg --headless --output out/demo.mp4 --events out/events.jsonl "$@"
