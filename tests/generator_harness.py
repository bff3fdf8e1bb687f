"""Driving a lip generator by hand in tests: its context for a span of a clip, and its crops
asked for as the pipeline's render threads ask."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.audio import SAMPLE_RATE, features_from_samples
from engine.face.analysis import analyze_range
from engine.lipsync.backend import SyncContext
from engine.media.audio import read_audio
from engine.media.reader import VideoReader


def sync_context(clip, dub, span: tuple[float, float]) -> SyncContext:
    """The whole clip analysed, frames inside ``span`` (seconds) edited, the dub from 0 s."""
    analysis = analyze_range(clip)
    samples = read_audio(dub, rate=SAMPLE_RATE, channels=1).samples
    edit = (analysis.times >= span[0]) & (analysis.times < span[1])
    return SyncContext(video=str(clip), analysis=analysis, source_audio=None,
                       dub_audio=features_from_samples(samples, analysis.times), edit=edit,
                       train=np.ones(len(analysis), bool), fps=analysis.fps)


def generated(generator, ctx: SyncContext, ks, threads: int = 1) -> list:
    """(frame, Generated) for analysed frames ``ks``, asked from ``threads`` threads."""
    def one(k):
        frame = reader.frame(ctx.analysis.start + k)
        x0, y0, x1, y1 = ctx.analysis.crop_boxes[k]
        box = tuple(int(v) // 2 * 2 for v in (x0, y0, x1, y1))
        return frame, generator.generate(frame, k, box)

    with VideoReader(ctx.video) as reader, ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, ks))


def edited_frames_change_only_in_mask(clip, out, span: tuple[float, float],
                                      reach: int = 5) -> list[int]:
    """Assert that ``out`` (a sync of ``clip``) keeps every frame outside ``span`` and, inside
    it, changes pixels only within the lower-face mask (grown by ``reach`` pixels: a changed
    4:2:0 chroma sample reaches past the mask's edge); the indices of the frames changed."""
    import cv2

    from engine.mask import landmark_mask
    from engine.media.frame import planes_from_av
    from engine.pipeline import SyncSettings
    from tests.media_factory import decode_all

    analysis = analyze_range(clip)
    settings = SyncSettings().mask
    changed = []
    for i, (s, o) in enumerate(zip(decode_all(clip), decode_all(out))):
        diff = planes_from_av(s)[0] != planes_from_av(o)[0]
        if not span[0] <= analysis.times[i] < span[1]:
            assert not diff.any(), f"frame {i} outside the range changed"
            continue
        if diff.any():
            changed.append(i)
        mask = landmark_mask(analysis.landmarks[i], (0, 0, diff.shape[1], diff.shape[0]),
                             settings)
        near = cv2.dilate((mask > 0).astype(np.uint8), np.ones((reach, reach), np.uint8)) > 0
        assert not (diff & ~near).any(), f"frame {i}: pixels changed outside the mask"
    return changed
