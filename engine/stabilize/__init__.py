"""The stabilizer stage: pose-normalised face crops for the neural generators (``backend.py``)."""
