#!/bin/sh
# Add Redub Studio to the desktop's application menu (for this user): the entry points at this
# folder, so run it again after moving the folder. `--remove` takes the entry and icon away.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
apps=${XDG_DATA_HOME:-$HOME/.local/share}/applications
icons=${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/256x256/apps
if [ "${1:-}" = --remove ]; then
  rm -f "$apps/redub-studio.desktop" "$icons/redub-studio.png"
  exit 0
fi
mkdir -p "$apps" "$icons"
cp "$here/share/redub-studio.png" "$icons/redub-studio.png"
# A folder name may hold any character but the Exec line's quote and sed's delimiter.
case $here in *'"'*|*'|'*) echo "install-desktop-entry: move the folder to a path without \" or |" >&2; exit 1;; esac
sed "s|@BUNDLE@|$here|" "$here/share/redub-studio.desktop" > "$apps/redub-studio.desktop.tmp"
mv "$apps/redub-studio.desktop.tmp" "$apps/redub-studio.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$apps" || true
echo "Redub Studio added to the applications menu ($apps/redub-studio.desktop)"
