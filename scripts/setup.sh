#!/usr/bin/env bash
# Set up coral-mfg on a fresh Debian/Ubuntu machine: system packages, a virtual
# environment in .venv, the package itself, and the verified models and videos.
#   scripts/setup.sh          the application
#   scripts/setup.sh --dev    plus the test tools and the training extra (TensorFlow)
# Assets come from $CORAL_MFG_ASSETS (a mirror folder or URL) when it is set,
# else from their official URLs.
set -euo pipefail
cd "$(dirname "$0")/.."

extra=""
[ "${1:-}" = "--dev" ] && extra="[dev,train]"

# Runtime: venv for Debian's python3, GL and X client libraries for the window;
# tests: Xvfb, Mesa, ffprobe, a C compiler for the stand-in Edge TPU runtime, an MQTT
# broker (the tests start their own on a free loopback port), and Chromium with its
# driver for the web view's browser test.
packages=(python3-venv libgl1 libegl1 libx11-6 libxrandr2 libxinerama1 libxcursor1 libxi6)
[ -n "$extra" ] && packages+=(xvfb libgl1-mesa-dri xauth ffmpeg gcc libc6-dev mosquitto
                               mosquitto-clients chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: Python >= 3.11 is needed (found $("$python" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
# Install only when the package's metadata ([project] in pyproject.toml) or the
# extras asked for changed since the last install (a [dev,train] install covers
# the plain one), so a re-run needs no package index.
stamp=.venv/.coral-mfg-installed
hash=$(sed -n '/^\[build-system\]/,/^\[tool\./p' pyproject.toml | sha256sum | cut -d' ' -f1)
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$have" = "$hash [dev,train]" ] || [ "$have" = "$hash ${extra:-[]}" ]; then
  echo "setup: coral-mfg and its dependencies are installed and up to date"
else
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".${extra}"
  echo "$hash ${extra:-[]}" > "$stamp"
fi

.venv/bin/coral-mfg fetch-assets
