"""The bundle's ``redub-studio`` application (PyInstaller runs this file as ``__main__``)."""
import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # timeline batches spawn workers from this executable
    from desktop.app import main
    sys.exit(main())
