#!/usr/bin/env bash
# Build the one-folder application: DIST/redub-studio/ with `redub`, `redub-studio`, the
# desktop entry and its installer. Usage: bash installer/build.sh [cpu|gpu] [--dist DIR]
#   cpu (default): onnxruntime's CPU build; gpu: onnxruntime-gpu (CUDA and TensorRT providers).
# The build environment is build/bundle-env-VARIANT, made from requirements/bundle[-gpu].txt
# (the locked runtime and PyInstaller, hashes checked); DIST defaults to dist/VARIANT.
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANT=cpu
DIST=
while (($#)); do
  case $1 in
    cpu|gpu) VARIANT=$1 ;;
    --dist) DIST=${2:?--dist needs a folder}; shift ;;
    *) echo "build.sh: unknown argument '$1' (usage: build.sh [cpu|gpu] [--dist DIR])" >&2; exit 2 ;;
  esac
  shift
done
LOCK=requirements/bundle.txt
[ "$VARIANT" = gpu ] && LOCK=requirements/bundle-gpu.txt
DIST=$(realpath -m "${DIST:-dist/$VARIANT}")
ENV=build/bundle-env-$VARIANT
WORK=build/pyinstaller-$VARIANT
PYTHON=${PYTHON:-python3}

# The environment is made again only when its lock changed.
stamp=$(sha256sum "$LOCK" | cut -d' ' -f1)
if [ "$(cat "$ENV/lock.sha256" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$ENV"
  "$PYTHON" -m venv "$ENV"
  "$ENV/bin/python" -m pip -q --disable-pip-version-check install --require-hashes --no-deps \
    -r "$LOCK" 2> >(grep -v "^WARNING: Location 'file://.*' is ignored" >&2)
  echo "$stamp" > "$ENV/lock.sha256"
fi

mkdir -p "$WORK"
"$ENV/bin/python" installer/bundle/render_icon.py resources/icons/redub-studio.svg "$WORK/redub-studio.png"
REDUB_BUNDLE_ICON=$(realpath "$WORK/redub-studio.png") "$ENV/bin/python" -m PyInstaller \
  --noconfirm --log-level WARN --distpath "$DIST" --workpath "$WORK" installer/bundle/redub-studio.spec

APP=$DIST/redub-studio
if [ "$(uname -s)" = Linux ]; then
  mkdir -p "$APP/share"
  cp installer/bundle/redub-studio.desktop "$WORK/redub-studio.png" "$APP/share/"
  cp installer/bundle/install-desktop-entry.sh "$APP/"
fi
echo "built $APP ($(du -sh "$APP" | cut -f1)): $APP/redub sync ..., $APP/redub-studio"
