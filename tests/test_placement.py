"""Landmarks that slipped off a blurred or turning face are found, carried back onto it from good
frames, and the new mouth is placed there; frames that cannot be placed are named."""
from __future__ import annotations

from dataclasses import replace

import av
import cv2
import numpy as np
import pytest

from engine.face import geometry as geo
from engine.face.analysis import AnalysisSettings, Flag, analyze_range, describe
from engine.face.landmark import create_landmarker
from engine.face.pixels import gray
from engine.face.refine import refine_landmarks
from engine.media.reader import VideoReader
from engine.pipeline import SyncSettings, prepare_sync
from tests.conftest import shared_clip

@pytest.fixture(autouse=True)
def _shared_cache(tmp_path_factory, monkeypatch):
    # One face analysis of the shared clip serves every test here.
    monkeypatch.setenv("REDUB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "placement"))


SIDE = 320  # the shared clip scaled down: quick to analyse, the face still 150 pixels wide
FRAMES = 75
SWING = (30, 46)  # frames of the fast head swing


def _pose(t: float) -> tuple[float, float]:
    """Tilt (degrees) and sideways shift (pixels) at time ``t`` (in frames): a quick swing
    there and back, as when a speaker laughs and throws the head aside."""
    a, b = SWING
    if not a <= t <= b:
        return 0.0, 0.0
    s = np.sin(np.pi * (t - a) / (b - a))
    return 20.0 * s, 60.0 * s


@pytest.fixture(scope="module")
def swing(tmp_path_factory):
    """hdtf_aoc_512 scaled down, with a fast swing: each frame is tilted, shifted and blended
    from nine poses over its frame interval (motion blur). Returns the clip and the true
    landmarks of every frame (the clean clip's, moved the same way)."""
    source = shared_clip("hdtf_aoc_512.mp4")
    folder = tmp_path_factory.mktemp("swing")
    clean = analyze_range(source, 0.0, FRAMES / 25, use_cache=False)
    path = folder / "swing.mp4"
    truth = []
    with VideoReader(source) as reader, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "18", "bf": "0"}
        for frame in reader.frames(0, FRAMES):
            k = frame.index
            image = cv2.resize(frame.rgb(), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
            points = clean.landmarks[k].astype(np.float64) * SIDE / 512
            centre = tuple(float(v) for v in points[27:48].mean(0))
            blended = np.zeros(image.shape, np.float32)
            moved = []
            for t in np.linspace(k - 1, k, 9):  # the shutter open over the frame interval
                angle, shift = _pose(t)
                m = cv2.getRotationMatrix2D(centre, angle, 1.0)
                m[0, 2] += shift
                blended += cv2.warpAffine(image, m, (SIDE, SIDE), borderMode=cv2.BORDER_REFLECT)
                moved.append(geo.apply(m, points))
            truth.append(np.mean(moved, axis=0))
            picture = av.VideoFrame.from_ndarray((blended / 9).astype(np.uint8), format="rgb24")
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path, np.array(truth)


def _measured(frame, truth: np.ndarray) -> np.ndarray:
    """The embedded landmarker's 68 points on ``frame``, started from the true face's box."""
    marker = create_landmarker("dlib")
    box = geo.face_box(geo.to_canonical(truth))[None]
    return marker.landmarks(gray(frame), box)[0][0].astype(np.float64)


def test_blurred_tilted_frames_are_resynced_with_the_mouth_on_the_face(swing):
    path, truth = swing
    dub = shared_clip("speech_radio31_16k.wav")
    session = prepare_sync(path, dub, ranges=[(1.0, 2.0)])
    try:
        swung = np.arange(*SWING)
        assert session.unplaced_frames().size == 0
        assert set(swung.tolist()) <= set(session.edited_frames().tolist())
        assert not any("own mouth" in n for n in session.notes)
        with VideoReader(path) as reader:
            for k in swung[::3]:
                source = reader.frame(int(k))
                output = session.render_frame(source)
                changed = output.planes[0] != source.planes[0]
                assert changed.any(), f"frame {k} not re-synced"
                iod = float(geo.interocular(truth[k]))
                # The new mouth sits where the source's was: its outline's centre, and the
                # corners, measured on the output (the shape itself is the dub's).
                lips = _measured(output, truth[k])
                centre = np.linalg.norm(lips[48:60].mean(0) - truth[k][48:60].mean(0)) / iod
                corners = np.linalg.norm(lips[[48, 54]] - truth[k][[48, 54]], axis=1) / iod
                assert centre < 0.1 and corners.max() < 0.2, (k, centre, corners)
                # Nothing is pasted off the face: every changed pixel lies inside its true
                # outline (the jaw, closed over the nose), with the soft edge's width to spare.
                ys, xs = np.nonzero(changed)
                outline = np.vstack([truth[k][0:17], truth[k][[26, 17]]]).astype(np.float32)
                inside = [cv2.pointPolygonTest(outline, (float(x), float(y)), True)
                          for x, y in zip(xs[::7], ys[::7])]
                assert min(inside) > -0.15 * iod, (k, min(inside) / iod)
    finally:
        session.close()


def _slipped(analysis, frames: np.ndarray, lost: np.ndarray):
    """``analysis`` described again from raw landmarks that slipped the way dlib's do on a
    blurred turn (the jaw line swells away from the nose, the far cheek most, the chin drops;
    everything drifts aside) on ``frames``, and that the tracker lost on ``lost``."""
    raw = analysis.raw_landmarks.astype(np.float64).copy()
    for i, k in enumerate(frames):
        weight = np.sin(np.pi * (i + 1) / (len(frames) + 1))
        nose = raw[k, 30]
        swell = np.linspace(1.1, 1.45, 17)[:, None]  # the image-right cheek swells most
        raw[k, :17] = nose + (raw[k, :17] - nose) * (1 + (swell - 1) * weight)
        raw[k] += weight * np.array([6.0, 4.0])
    raw[lost] = np.nan
    flags = analysis.flags
    confirmed = (flags & Flag.LOW_CONFIDENCE) == 0
    arrays = describe(raw, analysis.scores, confirmed, (flags & Flag.SHOT_START) != 0,
                      analysis.times, analysis.width, analysis.height, analysis.fps,
                      AnalysisSettings())
    return replace(analysis, **arrays)


def _error(a: np.ndarray, b: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mean distance per frame over ``points``, in inter-ocular distances."""
    return (np.linalg.norm(a[:, points] - b[:, points], axis=2).mean(1)
            / geo.interocular(b))


def test_slipped_and_lost_landmarks_are_carried_back_from_good_frames():
    clip = shared_clip("hdtf_aoc_512.mp4")
    clean = analyze_range(clip, 0.0, 3.0)
    slip, lost = np.arange(6, 18), np.arange(29, 32)
    broken = _slipped(clean, slip, lost)
    assert (broken.flags[lost] & Flag.INTERPOLATED).all()
    lower = np.r_[2:15, 48:68]
    assert _error(broken.landmarks[slip], clean.landmarks[slip], lower).max() > 0.12
    placement = refine_landmarks(clip, broken)
    assert placement.repaired[slip].all() and placement.repaired[lost].all()
    assert not placement.unplaced.any()
    fixed = placement.analysis
    # Back on the face: about as close to the clean landmarks as dlib's frame-to-frame jitter
    # (0.02-0.04 on this clip).
    assert _error(fixed.landmarks[slip], clean.landmarks[slip], lower).max() < 0.06
    assert _error(fixed.landmarks[lost], clean.landmarks[lost], lower).max() < 0.06
    # Everything derived from them follows (the mouth is placed through the transform).
    np.testing.assert_allclose(fixed.transforms, geo.to_canonical(fixed.landmarks), atol=1e-4)
    assert not (fixed.flags[lost] & Flag.INTERPOLATED).any()
    np.testing.assert_array_equal(fixed.raw_landmarks, broken.raw_landmarks)
    # A second run reads the repair from the cache beside the analysis.
    again = refine_landmarks(clip, broken)
    np.testing.assert_array_equal(again.analysis.landmarks, fixed.landmarks)


def test_a_slip_that_cannot_be_bridged_keeps_its_own_mouth_and_is_named(monkeypatch):
    clip = shared_clip("hdtf_aoc_512.mp4")
    dub = shared_clip("speech_radio31_16k.wav")
    clean = analyze_range(clip, 0.0, 3.0)
    # At the start of the shot: no good frame before it, too long to carry from after it.
    broken = _slipped(clean, np.arange(0, 12), np.zeros(0, int))
    monkeypatch.setattr("engine.pipeline.analyze_range", lambda *a, **k: broken)
    session = prepare_sync(clip, dub, ranges=[(0.0, 1.2)], settings=SyncSettings(
        train_range=(0.0, 3.0)))
    try:
        unplaced = session.unplaced_frames()
        # The slipped frames and the one beside them that disagrees with the last of them.
        np.testing.assert_array_equal(unplaced, np.arange(13))
        assert set(unplaced.tolist()).isdisjoint(session.edited_frames().tolist())
        assert any(f"{unplaced.size} frames keep their own mouth" in n for n in session.notes)
        with VideoReader(clip) as reader:
            frame = reader.frame(int(unplaced[0]))
            assert session.render_frame(frame) is frame
    finally:
        session.close()
