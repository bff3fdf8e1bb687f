"""A least-recently-used frame cache bounded in bytes, for scrubbing back and forth."""
from __future__ import annotations

import threading
from collections import OrderedDict

from engine.media.frame import Frame


class FrameCache:
    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._frames: OrderedDict[int, Frame] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # the viewer and a prefetch thread may share one reader

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._frames)

    def get(self, index: int) -> Frame | None:
        with self._lock:
            frame = self._frames.get(index)
            if frame is not None:
                self._frames.move_to_end(index)
            return frame

    def put(self, frame: Frame) -> None:
        size = frame.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._frames.pop(frame.index, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._frames[frame.index] = frame
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._frames.popitem(last=False)
                self._bytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0
