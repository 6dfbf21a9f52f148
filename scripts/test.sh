#!/usr/bin/env bash
# Set up with the test tools, then run the whole suite (lint and types included).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
exec .venv/bin/python -m pytest "$@"
