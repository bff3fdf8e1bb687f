"""3D face coefficients per frame, as Video ReTalking computes them, cached per clip.

Video ReTalking's D-Net is driven by Deep3DFaceRecon's coefficients of every frame's face crop
(identity, expression, texture, angles, lighting, translation: 257 numbers) followed by the five
alignment parameters, the 262-wide ``semantic_npy`` rows. The network (``retalking_face3d``)
sees the crop aligned as Deep3DFaceRecon's ``align_img`` aligns it: five points from the 68
landmarks fitted by least squares to the projection of five standard 3D landmarks (the model's
``lm3d_std`` metadata), the crop scaled so that fit has size 102 with Pillow's bicubic resize
(redone here byte for byte, :func:`engine.face_parsing.pil_resize`) and cut to 224x224.
Deep3DFaceRecon's y axis points up, so landmarks are flipped (``H - 1 - y``) first, as the
official inference does; the translation in the parameters is in that flipped frame.

:func:`clip_coefficients` runs it over an analysed range in one forward decoding pass on the
geometric stabilizer's crops; frames without a face take the nearest face's row (the D-Net reads
a window of neighbours). Cached beside the face analysis.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import RedubError
from engine.face import geometry as geo
from engine.face.analysis import FaceAnalysis, cache_file
from engine.face_parsing import pil_resize
from engine.media.reader import VideoReader
from engine.models.session import session_for
from engine.models.store import model_path, read_pins
from engine.progress import CancelToken, ProgressFn, no_progress
from engine.stabilize.backend import Framing
from engine.stabilize.geometric import GeometricStabilizer

MODEL_ID = "retalking_face3d"
SIZE = 224  # side of the aligned face the network takes
RESCALE = 102.0  # size of the five-point fit in the aligned face
COEFFS = 257
ROW = COEFFS + 5  # coefficients, then (width, height, scale, tx, ty) of the alignment
BATCH = 16  # crops aligned and run together (the only crops held while decoding)
VERSION = 1  # of the cached coefficients


def deep3d_points(landmarks: np.ndarray) -> np.ndarray:
    """Deep3DFaceRecon's five points of 68 landmarks (68, D) -> (5, D): each eye's two corners
    averaged, the nose tip, the mouth corners."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack([lm[[36, 39]].mean(0), lm[[42, 45]].mean(0), lm[30], lm[48], lm[54]])


def align_face(image: np.ndarray, landmarks: np.ndarray,
               lm3d_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The face of ``image`` (H, W, 3) uint8 RGB with 68 ``landmarks`` (image pixels) aligned
    for the network: (224, 224, 3) uint8 RGB, and the alignment (5,) float32
    ``(W, H, scale, tx, ty)`` (``tx, ty`` in the y-up frame)."""
    h0, w0 = image.shape[:2]
    lm = np.array(landmarks, dtype=np.float64)
    lm[:, 1] = h0 - 1 - lm[:, 1]
    (tx, ty), fit = _project(deep3d_points(lm), np.asarray(lm3d_std, dtype=np.float64))
    s = RESCALE / fit
    # The official code truncates (numpy int32 casts), in this order of operations.
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - SIZE / 2 + (tx - w0 / 2) * s)
    up = int(h / 2 - SIZE / 2 + (h0 / 2 - ty) * s)
    aligned = np.zeros((SIZE, SIZE, 3), np.uint8)  # black beyond the picture, as PIL crops
    if w > 0 and h > 0:
        resized = pil_resize(image, w, h, "bicubic")
        x0, y0 = max(left, 0), max(up, 0)
        x1, y1 = min(left + SIZE, w), min(up + SIZE, h)
        if x1 > x0 and y1 > y0:
            aligned[y0 - up:y1 - up, x0 - left:x1 - left] = resized[y0:y1, x0:x1]
    return aligned, np.array([w0, h0, s, tx, ty], dtype=np.float32)


def _project(points: np.ndarray, lm3d: np.ndarray) -> tuple[tuple[float, float], float]:
    """Least-squares weak perspective projection of the 3D points ``lm3d`` (5, 3) onto the
    image ``points`` (5, 2): its translation and scale (the mean length of its two rows)."""
    design = np.hstack([lm3d, np.ones((len(lm3d), 1))])
    rows = [np.linalg.lstsq(design, points[:, i], rcond=None)[0] for i in (0, 1)]
    scale = (np.linalg.norm(rows[0][:3]) + np.linalg.norm(rows[1][:3])) / 2
    return (float(rows[0][3]), float(rows[1][3])), float(scale)


class Face3D:
    """The coefficient regressor and the standard landmarks its alignment uses."""

    def __init__(self, providers: Sequence[str] | None = None) -> None:
        path = model_path(MODEL_ID)
        self.session = session_for(path, "3D face model", providers)
        meta = self.session.session.get_modelmeta().custom_metadata_map
        try:
            self.lm3d_std = np.array(json.loads(meta["lm3d_std"]), dtype=np.float64)
        except (KeyError, ValueError) as exc:
            raise RedubError("3D face model has no readable 'lm3d_std' metadata", path) from exc
        if self.lm3d_std.shape != (5, 3):
            raise RedubError(f"3D face model's 'lm3d_std' is {self.lm3d_std.shape}, not (5, 3)",
                             path)

    def coefficients(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Rows (N, 262) float32 for face crops (N, S, S, 3) uint8 RGB whose 68 landmarks are
        ``landmarks`` (N, 68, 2) in crop pixels: the network's 257, then the alignment's 5."""
        if len(crops) == 0:
            return np.zeros((0, ROW), np.float32)
        aligned, params = zip(*(align_face(c, p, self.lm3d_std)
                                for c, p in zip(crops, landmarks)))
        # Scaled in float64 and rounded once, as the official code builds its tensor.
        image = (np.stack(aligned).astype(np.float64) / 255.0).astype(np.float32)
        coeffs = self.session.run_batched({"image": image.transpose(0, 3, 1, 2)}, BATCH)[0]
        return np.concatenate([coeffs, np.stack(params)], 1).astype(np.float32)


def clip_coefficients(video: str | os.PathLike, analysis: FaceAnalysis, framing: Framing,
                      providers: Sequence[str] | None = None, use_cache: bool = True, *,
                      progress: ProgressFn = no_progress,
                      cancel: CancelToken | None = None) -> np.ndarray:
    """Rows (N, 262) float32 for the N analysed frames, from each face's crop at ``framing``
    (the geometric stabilizer's crop); faceless frames copy the nearest face's row.

    Cached beside the analysis, keyed by it, the landmarks and transforms it holds (a repaired
    analysis differs there), the framing and the model file; a hit decodes nothing.
    """
    video = os.fspath(video)
    found = np.flatnonzero(analysis.found)
    if len(found) == 0:
        raise RedubError("no face in the analysed range to fit a 3D face to", video)
    entry = _cache_entry(analysis, framing)
    if use_cache:
        cached = _load(entry, len(analysis))
        if cached is not None:
            return cached
    rows = _compute(video, analysis, framing, found, providers, progress, cancel)
    rows = rows[_nearest(found, len(analysis))]
    if use_cache:
        _save(entry, rows)
    return rows


def _compute(video: str, analysis: FaceAnalysis, framing: Framing, found: np.ndarray,
             providers: Sequence[str] | None, progress: ProgressFn,
             cancel: CancelToken | None) -> np.ndarray:
    """Rows for the ``found`` frames only, in their order."""
    model = Face3D(providers)
    stabilizer = GeometricStabilizer()
    stabilizer.prepare(analysis)
    present = set(found.tolist())
    rows, crops, points = [], [], []
    done = 0

    def flush() -> None:
        rows.append(model.coefficients(np.stack(crops), np.stack(points)))
        crops.clear()
        points.clear()

    a = analysis
    with VideoReader(video) as reader:
        for frame in reader.frames(a.start + int(found[0]), a.start + int(found[-1]) + 1):
            if cancel is not None:
                cancel.check()
            k = frame.index - a.start
            if k not in present:
                continue
            crop = stabilizer.crops([frame], [k], framing)[0]
            crops.append(crop.image)
            points.append(geo.apply(crop.transform, a.landmarks[k]))
            if len(crops) == BATCH:
                flush()
            done += 1
            progress("3d face", done, len(found))
    if crops:
        flush()
    return np.concatenate(rows)


def _nearest(found: np.ndarray, n: int) -> np.ndarray:
    """For each of ``n`` frames, the position in ``found`` of the nearest found frame (the
    earlier one on a tie)."""
    frames = np.arange(n)
    after = np.clip(np.searchsorted(found, frames), 0, len(found) - 1)
    before = np.clip(after - 1, 0, None)
    take_before = np.abs(frames - found[before]) <= np.abs(found[after] - frames)
    return np.where(take_before, before, after)


def _cache_entry(analysis: FaceAnalysis, framing: Framing) -> Path:
    model = model_path(MODEL_ID)  # verified, hence pinned: its sha256 is known
    framed = [*map(float, framing.centre), float(framing.side), int(framing.size)]
    key = hashlib.sha256(json.dumps([read_pins(model.parent)[model.name]["sha256"],
                                     framed]).encode())
    for array in (analysis.flags, analysis.landmarks, analysis.transforms):
        key.update(np.ascontiguousarray(array).tobytes())
    return cache_file(analysis).with_suffix(f".face3d{VERSION}.{key.hexdigest()[:16]}.npy")


def _load(entry: Path, n: int) -> np.ndarray | None:
    try:
        rows = np.load(entry, allow_pickle=False)
    except (OSError, ValueError):
        return None  # absent or damaged: computed again and rewritten
    return rows if rows.shape == (n, ROW) and rows.dtype == np.float32 else None


def _save(entry: Path, rows: np.ndarray) -> None:
    temp = entry.with_name(f".{entry.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(temp, "wb") as f:
            np.save(f, rows)
        os.replace(temp, entry)
    except OSError:
        temp.unlink(missing_ok=True)  # an unwritable cache only costs computing it again
