"""PyInstaller runtime hook: programs this one starts get the user's library path back.

On Linux the bootloader starts the program with the bundle's ``_internal/`` first on
LD_LIBRARY_PATH, and every child inherits it: a file manager opened by "Show in folder"
(xdg-open) or a shell would load the bundle's older GLib or readline in place of its own. The
dynamic loader read the variable when this process started, so restoring the user's value
(which the bootloader keeps in LD_LIBRARY_PATH_ORIG) changes nothing here. The batch's workers
are this executable again, and their bootloader sets the bundle's path anew.
"""
import os
import sys

if sys.platform.startswith("linux"):
    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is None:
        os.environ.pop("LD_LIBRARY_PATH", None)
    else:
        os.environ["LD_LIBRARY_PATH"] = original
