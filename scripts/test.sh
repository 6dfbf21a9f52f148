#!/usr/bin/env bash
# Set up with the test tools, then run the whole suite (lint and types included).
# Two workers, each taking whole files: most tests wait on real processes, so two
# overlap well even on two cores; extra arguments (-n 0 for one worker) come last.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
