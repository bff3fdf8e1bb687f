"""The bundle's ``redub`` command (PyInstaller runs this file as ``__main__``)."""
import multiprocessing
import sys

if __name__ == "__main__":
    # Batch workers are spawned processes: in a frozen app they start this executable, and
    # freeze_support turns that start into the worker instead of a second command line.
    multiprocessing.freeze_support()
    from engine.cli import main
    sys.exit(main())
