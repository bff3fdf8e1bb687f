"""Analysing clip ranges end to end: shared clips, composed two-shots, blanks, odd inputs."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engine.cli import main
from engine.errors import RedubError
from engine.face import geometry as geo
from engine.face.analysis import FaceAnalysis, Flag, Target, analyze_range, cache_file
from engine.face.detect import create_detector, detect_multiscale, detection_scales
from engine.face.overlay import write_overlay
from engine.face.pixels import gray
from engine.face.track import FaceTracker
from engine.media.reader import VideoReader
from tests.conftest import shared_clip

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MEDIA = SHARED / "media"
SCRFD = SHARED / "models" / "scrfd_2.5g_bnkps.onnx"
CLIPS = sorted(MEDIA.glob("*.mp4")) if MEDIA.is_dir() else []
needs_media = pytest.mark.skipif(not CLIPS, reason="../shared/media not available")
BACKENDS = [("dlib", {})] + ([("scrfd", {"model": str(SCRFD)})] if SCRFD.is_file() else [])


@lru_cache(maxsize=None)
def shared_frames(name: str, count: int) -> tuple[np.ndarray, ...]:
    with VideoReader(MEDIA / name) as reader:
        return tuple(f.rgb() for f in reader.frames(0, count))


def write_clip(path: Path, frames, fps: int = 25, rotation: int = 0) -> Path:
    """H.264 clip of RGB frames; ``rotation`` stores a display matrix (pixels already turned)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "18", "bf": "0"}
        if rotation:
            stream.set_display_rotation(rotation)
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def centres(analysis: FaceAnalysis) -> np.ndarray:
    return (analysis.boxes[:, :2] + analysis.boxes[:, 2:]) / 2


def face_size(analysis: FaceAnalysis) -> np.ndarray:
    return geo.FACE_BOX[2] / geo.scale_of(analysis.transforms.astype(np.float64))


@needs_media
@pytest.mark.parametrize("clip", CLIPS, ids=[c.stem for c in CLIPS])
def test_target_found_on_every_shared_clip_and_backends_agree(clip):
    results = {}
    for backend, options in BACKENDS:
        a = analyze_range(clip, backend=backend, backend_options=options)
        found = a.found
        assert found.mean() >= 0.99, f"{backend}: found on {found.mean():.1%}"
        lm = a.landmarks[found]
        assert np.isfinite(lm).all()
        assert (lm[..., 0] > -0.1 * a.width).all() and (lm[..., 0] < 1.1 * a.width).all()
        crop = a.crop_boxes[found]
        assert (crop[:, :2] >= -1e-3).all() and (crop[:, 2] <= a.width + 1e-3).all()
        assert (crop[:, 3] <= a.height + 1e-3).all()
        assert np.isfinite(a.poses[found]).all()
        results[backend] = a
    if len(results) == 2:
        a, b = results["dlib"], results["scrfd"]
        both = a.found & b.found
        gap = np.hypot(*(centres(a) - centres(b))[both].T) / face_size(a)[both]
        assert gap.max() < 0.05, f"box centres differ by {gap.max():.1%} of the face size"



@pytest.mark.parametrize("span", [(1.8, 2.3), (2.8, 3.3)])
def test_fast_head_swing_is_followed(span):
    # Here the head swings by up to a fifth of a face per frame, blurred. The tracked landmarks
    # must stay on the face a fresh detection finds on each frame; they trailed it by up to 38%
    # of the face while the landmark score still vouched for them.
    clip = shared_clip("talk_d12_512.mp4")
    a = analyze_range(clip, *span)
    detector = create_detector("dlib")
    centre = lambda m: geo.apply(geo.invert(m), np.array([[0.5, 0.6]]))[0]  # noqa: E731
    errors = []
    with VideoReader(clip) as reader:
        for raw, frame in zip(a.raw_landmarks.astype(np.float64), reader.frames(a.start, a.stop)):
            dets = detect_multiscale(detector, gray(frame),
                                     detection_scales(detector, a.width, a.height, 40))
            fresh = geo.five_to_canonical(dets.keypoints[0].astype(np.float64))
            size = geo.FACE_BOX[2] / geo.scale_of(fresh)
            errors.append(np.linalg.norm(centre(geo.to_canonical(raw)) - centre(fresh)) / size)
    assert max(errors) < 0.08, f"up to {max(errors):.0%} of the face off"

@needs_media
def test_two_faces_default_is_the_larger_and_a_picked_one_is_kept(tmp_path):
    big = shared_frames("hdtf_aoc_512.mp4", 75)
    small = shared_frames("retalk_face5_524.mp4", 75)
    frames = []
    for a, b in zip(big, small):
        canvas = np.full((512, 1024, 3), 90, np.uint8)
        canvas[:, :512] = a
        canvas[96:416, 608:928] = cv2.resize(b, (320, 320), interpolation=cv2.INTER_AREA)
        frames.append(canvas)
    clip = write_clip(tmp_path / "two.mp4", frames)

    default = analyze_range(clip)
    assert default.found.mean() >= 0.99
    assert (centres(default)[default.found, 0] < 512).all()

    picked = analyze_range(clip, target=Target(768, 256, 1.6))  # the small face, mid-range
    assert picked.found.mean() >= 0.99
    assert (centres(picked)[picked.found, 0] > 512).all()


@needs_media
def test_blank_frames_are_flagged_and_passed_through(tmp_path):
    frames = [f.copy() for f in shared_frames("hdtf_aoc_512.mp4", 60)]
    blank = [20] + list(range(38, 46))
    for i in blank:
        frames[i][:] = 0
    a = analyze_range(write_clip(tmp_path / "blank.mp4", frames))
    missing = np.flatnonzero(~a.found).tolist()
    assert missing == blank
    assert np.isnan(a.landmarks[blank]).all() and np.isnan(a.crop_boxes[blank]).all()
    assert all(a.flags[[21, 46]] & Flag.SHOT_START)  # the face comes back after a cut
    face = a.frame(21)
    assert face.found and face.landmarks.shape == (68, 2)


def test_a_clip_without_faces_ends_with_a_clear_error(tmp_path):
    y, x = np.mgrid[0:180, 0:320]
    frames = [np.dstack([(x + 3 * i) % 256, y, (x + y) % 256]).astype(np.uint8)
              for i in range(15)]
    clip = write_clip(tmp_path / "empty.mp4", frames)
    with pytest.raises(RedubError, match="no face found") as err:
        analyze_range(clip)
    assert "empty.mp4" in str(err.value) and "\n" not in str(err.value)
    assert main(["analyze", str(clip)]) == 1


@needs_media
def test_small_faces_are_flagged_and_too_small_ones_reported(tmp_path):
    face = shared_frames("hdtf_aoc_512.mp4", 12)

    def placed(side: int) -> list[np.ndarray]:
        out = []
        for f in face:
            canvas = np.full((360, 640, 3), 120, np.uint8)
            canvas[100:100 + side, 300:300 + side] = cv2.resize(f, (side, side),
                                                                interpolation=cv2.INTER_AREA)
            out.append(canvas)
        return out

    small = analyze_range(write_clip(tmp_path / "small.mp4", placed(110)))  # ~55 px face box
    assert small.found.mean() >= 0.9
    assert all(small.flags[small.found] & Flag.TINY)
    with pytest.raises(RedubError, match="smaller than about 40 pixels"):
        analyze_range(write_clip(tmp_path / "tiny.mp4", placed(36)))  # ~18 px face box


@needs_media
def test_4k_frames_give_full_resolution_geometry(tmp_path):
    face = shared_frames("hdtf_aoc_512.mp4", 6)
    frames = []
    for f in face:
        canvas = np.zeros((2160, 3840, 3), np.uint8)
        canvas[:, 840:3000] = cv2.resize(f, (2160, 2160), interpolation=cv2.INTER_CUBIC)
        frames.append(canvas)
    big = analyze_range(write_clip(tmp_path / "uhd.mp4", frames))
    small = analyze_range(write_clip(tmp_path / "ref.mp4", list(face)))
    assert (big.width, big.height) == (3840, 2160) and big.found.all()
    scaled = small.landmarks * (2160 / 512) + (840, 0)
    err = np.linalg.norm(big.landmarks - scaled, axis=-1).mean() / face_size(big).mean()
    assert err < 0.03


@needs_media
def test_portrait_phone_clip_is_analysed_upright(tmp_path):
    face = shared_frames("retalk_face3_590.mp4", 10)
    stored = []
    for f in face:
        upright = np.full((640, 360, 3), 60, np.uint8)
        upright[160:520, :] = cv2.resize(f, (360, 360), interpolation=cv2.INTER_AREA)
        stored.append(np.rot90(upright, -1))  # a phone stores it sideways, turned back on play
    a = analyze_range(write_clip(tmp_path / "phone.mp4", stored, rotation=90))
    assert (a.width, a.height) == (360, 640)
    assert a.found.all()
    cx, cy = np.median(centres(a), axis=0)
    assert 120 < cx < 240 and 260 < cy < 460
    assert np.nanmax(np.abs(a.poses[:, 2])) < 30  # upright, not lying on its side


@needs_media
def test_still_head_is_steady(tmp_path):
    rng = np.random.default_rng(0)
    still = shared_frames("hdtf_aoc_512.mp4", 41)[40].astype(np.float32)
    frames = [np.clip(still + rng.normal(0, 3, still.shape), 0, 255).astype(np.uint8)
              for _ in range(60)]
    a = analyze_range(write_clip(tmp_path / "still.mp4", frames))
    iod = np.median(geo.interocular(a.landmarks))
    motion = lambda pts: np.linalg.norm(np.diff(pts, axis=0), axis=-1).mean() / iod  # noqa
    smoothed, raw = motion(a.landmarks), motion(a.raw_landmarks)
    assert smoothed < 0.01, f"smoothed landmarks move {smoothed:.2%} of the eye distance"
    assert smoothed < raw / 2


@needs_media
@pytest.mark.parametrize("speed", [4, 10])
def test_sideways_move_is_followed_without_lag(tmp_path, speed):
    face = cv2.resize(shared_frames("hdtf_aoc_512.mp4", 41)[40], (300, 300),
                      interpolation=cv2.INTER_AREA)
    n = 50
    frames = []
    for t in range(n):  # the face slides right by ``speed`` pixels per frame
        canvas = np.full((400, 1024, 3), 100, np.uint8)
        canvas[50:350, 20 + speed * t: 320 + speed * t] = face
        frames.append(canvas)
    a = analyze_range(write_clip(tmp_path / "move.mp4", frames))
    assert a.found.all()
    x = a.landmarks[:, geo.STABLE, 0].astype(np.float64).mean(1)
    t = np.arange(n)
    offset = np.mean(x - speed * t)  # where the known motion puts the face at t = 0
    lag = (offset + speed * t - x) / speed  # frames behind the true position
    assert np.abs(lag).max() <= 1.0, f"lag up to {np.abs(lag).max():.2f} frames"


@needs_media
def test_second_run_loads_the_cache(tmp_path, monkeypatch):
    clip = MEDIA / "retalk_face5_524.mp4"
    first = analyze_range(clip, 1.0, 2.0)
    entry = Path(cache_file(first))
    assert entry.is_file() and entry.parent.name == "faces"
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]

    def fail(*args, **kwargs):
        raise AssertionError("recomputed instead of loading the cache")

    with monkeypatch.context() as patch:
        patch.setattr(FaceTracker, "step", fail)
        again = analyze_range(clip, 1.0, 2.0)
        assert np.array_equal(again.landmarks, first.landmarks)
        assert np.array_equal(again.flags, first.flags) and again.start == first.start == 25
        with pytest.raises(AssertionError, match="recomputed"):
            analyze_range(clip, 1.0, 2.2)  # another range is another entry
        with pytest.raises(AssertionError, match="recomputed"):
            analyze_range(clip, 1.0, 2.0, target=Target(262, 230, 1.5))
    entry.write_bytes(b"damaged")
    repaired = analyze_range(clip, 1.0, 2.0)
    assert np.array_equal(repaired.landmarks, first.landmarks)
    assert FaceAnalysis.load(entry).stop == first.stop


@needs_media
def test_cli_writes_analysis_and_overlay(tmp_path, capsys):
    clip = MEDIA / "talk_d12_512.mp4"
    overlay, saved = tmp_path / "overlay.mp4", tmp_path / "faces.npz"
    code = main(["analyze", str(clip), "--range", "50f-75f", "--overlay", str(overlay),
                 "-o", str(saved)])
    assert code == 0
    out = capsys.readouterr().out
    assert "target found    25 (100.0%)" in out and "cached:" in out
    analysis = FaceAnalysis.load(saved)
    assert (analysis.start, analysis.stop) == (50, 75)
    with VideoReader(overlay) as reader:
        assert reader.frame_count == 25
        drawn = reader.frame(10).rgb().astype(int)
    with VideoReader(clip) as reader:
        plain = reader.frame(60).rgb().astype(int)
    # Green landmark lines changed the picture along the jaw, and little elsewhere.
    jaw = np.round(analysis.frame(60).landmarks[4:13]).astype(int)
    on_jaw = np.abs(drawn - plain)[jaw[:, 1], jaw[:, 0]].sum(-1)
    assert np.median(on_jaw) > 60
    assert np.median(np.abs(drawn - plain)[300:, :100].sum(-1)) < 15
    assert main(["analyze", str(clip), "--target", "900,10@1"]) == 2  # outside the frame
    assert main(["analyze", str(clip), "--overlay", str(clip)]) == 2  # would overwrite input


@needs_media
def test_overlay_frames_can_be_written_for_inspection(tmp_path):
    a = analyze_range(MEDIA / "talk_s18_720p.mp4", 0.0, 0.5)
    out = tmp_path / "s18.mp4"
    write_overlay(a, out)
    assert out.is_file() and os.path.getsize(out) > 0
