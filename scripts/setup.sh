#!/usr/bin/env bash
# Set up a development machine: Debian libraries, a virtual environment, the package in it.
set -euo pipefail
cd "$(dirname "$0")/.."

# sounddevice needs PortAudio; Qt's xcb platform needs the X libraries (also under Xvfb);
# melt (Kdenlive's MLT engine) renders the timelines the batch writes, for the round-trip tests.
DEBS=(libportaudio2 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0
      libxcb-shape0 libxcb-xkb1 libxcb-cursor0 libxkbcommon-x11-0 libxkbcommon0 libegl1
      libgl1 libfontconfig1 libdbus-1-3 melt)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Machines without a sound card (CI, servers): an ALSA null device lets playback code run.
if ! grep -q '[0-9]' /proc/asound/cards 2>/dev/null && [ ! -e "$HOME/.asoundrc" ]; then
  printf 'pcm.!default { type null }\nctl.!default { type null }\n' > "$HOME/.asoundrc"
fi

# The locked versions (requirements/SET.txt, hashes checked), then the package itself without
# touching them. SET: dev (default: the app and its test tools), base, export, gpu or cluster
# (a Ray worker machine).
SET=${1:-dev}
LOCK=requirements/$SET.txt
[ -f "$LOCK" ] || { echo "setup: no lock '$LOCK' (sets: base, dev, export, gpu, cluster)" >&2; exit 2; }
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
# onnxruntime and onnxruntime-gpu ship the same module: only one may be installed.
if [ "$SET" = gpu ]; then other=onnxruntime; else other=onnxruntime-gpu; fi
"${PIP[@]}" uninstall -y "$other" >/dev/null 2>&1 || true
# This kind of machine's pip config names local package mirrors that hold only some packages;
# pip warns once per package it does not find there.
"${PIP[@]}" install --require-hashes --no-deps -r "$LOCK" \
  2> >(grep -v "^WARNING: Location 'file://.*' is ignored" >&2)
# setuptools' editable build warns on stderr at every install: shown only when it fails.
log=$(mktemp)
"${PIP[@]}" install --no-deps --no-build-isolation -e . 2>"$log" || { cat "$log" >&2; rm -f "$log"; exit 1; }
rm -f "$log"
"${PIP[@]}" check >/dev/null || { "${PIP[@]}" check >&2; exit 1; }
echo "ready ($SET set): .venv/bin/redub --help"
