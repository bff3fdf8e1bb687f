"""Detector and landmarker backends: embedded dlib, SCRFD (shared model), 2d106 (generated)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.errors import RedubError, UsageError
from engine.face import geometry as geo
from engine.face.detect import create_detector, detect_multiscale, detection_scales
from engine.face.landmark import create_landmarker
from engine.face.pixels import gray
from engine.face.track import TrackSettings
from engine.media.reader import VideoReader

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"
SCRFD = SHARED / "models" / "scrfd_2.5g_bnkps.onnx"
CLIPS = sorted(MEDIA.glob("*.mp4")) if MEDIA.is_dir() else []
needs_media = pytest.mark.skipif(not CLIPS, reason="../shared/media not available")
needs_scrfd = pytest.mark.skipif(not (CLIPS and SCRFD.is_file()),
                                 reason="../shared SCRFD model not available")


def frames(path: Path, every: int) -> list:
    with VideoReader(path) as reader:
        return [reader.frame(i) for i in range(0, reader.frame_count, every)]


def largest(dets):
    return int(np.argmax(dets.boxes[:, 2] - dets.boxes[:, 0]))


def test_embedded_models_found_without_running_the_package_init():
    # face_recognition_models' __init__ needs pkg_resources; it must never be imported.
    code = ("import sys; from engine.face.dlib_backend import model_path; "
            "p = model_path('shape_predictor_68_face_landmarks.dat'); "
            "assert p.endswith('.dat'), p; "
            "assert 'face_recognition_models' not in sys.modules; "
            "assert 'pkg_resources' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@needs_media
def test_dlib_detects_and_scores_the_shared_faces():
    detector = create_detector("dlib")
    marker = create_landmarker("dlib")
    frame = frames(MEDIA / "hdtf_aoc_512.mp4", 1000)[0]
    picture = gray(frame)
    dets = detect_multiscale(detector, picture, detection_scales(detector, 512, 512, 40))
    assert len(dets) == 1
    box, kps = dets.boxes[0], dets.keypoints[0]
    assert (kps[:, 0] > box[0]).all() and (kps[:, 0] < box[2]).all()
    assert kps[0, 0] < kps[1, 0] and kps[3, 0] < kps[4, 0]  # image-left first
    points, scores = marker.landmarks(picture, dets.boxes)
    assert points.shape == (1, 68, 2) and scores[0] > 0.8
    assert np.abs(geo.five_points(points[0]) - kps).max() < 0.05 * (box[2] - box[0])
    # The score tells a face from a blank or a box beside the face.
    _, blank = marker.landmarks(np.zeros_like(picture), dets.boxes)
    beside = dets.boxes + [box[2] - box[0], 0, box[2] - box[0], 0]
    _, off = marker.landmarks(picture, np.clip(beside, 0, 511))
    assert blank[0] == 0.0 and off[0] < 0.5



@needs_media
def test_dlib_landmarks_left_beside_the_face_score_low():
    # The 68-point predictor hardly leaves the box it starts from: started a quarter of a face
    # off, it returns a face shape beside the face. The score must say so, so the tracker
    # detects again, rather than vouch for the box it was given (it did, up to 0.99).
    detector, marker = create_detector("dlib"), create_landmarker("dlib")
    keep = TrackSettings().keep_score
    behind = 0
    for frame in frames(MEDIA / "hdtf_aoc_512.mp4", 60)[:3]:
        picture = gray(frame)
        box = detect_multiscale(detector, picture, detection_scales(detector, 512, 512, 40)
                                ).boxes[0].astype(np.float64)
        side = box[2] - box[0]
        good, good_score = marker.landmarks(picture, box[None])
        assert good_score[0] > 0.8
        for dx, dy in [(0.25, 0), (-0.25, 0), (0, 0.25), (0.3, 0), (-0.3, 0), (0, 0.3)]:
            start = box + np.array([dx, dy, dx, dy]) * side
            points, score = marker.landmarks(picture, start[None])
            off = np.abs(points[0, geo.STABLE].mean(0) - good[0, geo.STABLE].mean(0)).max() / side
            if off > 0.2:
                behind += 1
                assert score[0] < keep, f"frame {frame.index}: {off:.2f} off, score {score[0]}"
            elif off < 0.05:
                assert score[0] > 0.8
    assert behind >= 6  # the predictor did stay behind, so the scores above were tested

@needs_scrfd
def test_scrfd_agrees_with_dlib_on_every_shared_clip():
    """Box centres within 5% of the face size (boxes put in one convention via keypoints)."""
    dlib_det = create_detector("dlib")
    scrfd = create_detector("scrfd", model=SCRFD)
    worst = {}
    for clip in CLIPS:
        errors = []
        for frame in frames(clip, 10):
            a = detect_multiscale(dlib_det, gray(frame),
                                  detection_scales(dlib_det, frame.width, frame.height, 40))
            b = detect_multiscale(scrfd, frame.rgb(),
                                  detection_scales(scrfd, frame.width, frame.height, 40))
            assert len(a) and len(b), f"{clip.name} frame {frame.index}: missed"
            assert b.scores.max() > 0.5
            ma = geo.five_to_canonical(a.keypoints[largest(a)].astype(np.float64))
            mb = geo.five_to_canonical(b.keypoints[largest(b)].astype(np.float64))
            box_a, box_b = geo.face_box(ma), geo.face_box(mb)
            size = geo.FACE_BOX[2] / geo.scale_of(ma)
            centre = lambda box: (box[:2] + box[2:]) / 2  # noqa: E731
            errors.append(np.hypot(*(centre(box_a) - centre(box_b))) / size)
        worst[clip.name] = max(errors)
    assert max(worst.values()) < 0.05, worst


@needs_scrfd
def test_scrfd_handles_sizes_and_blank_pictures():
    scrfd = create_detector("scrfd", model=SCRFD)
    rgb = frames(MEDIA / "retalk_face2_844.mp4", 1000)[0].rgb()
    assert len(scrfd.detect(np.zeros((100, 130, 3), np.uint8))) == 0
    odd = scrfd.detect(cv2.resize(rgb, (333, 333)))  # not a multiple of 32: padded
    assert len(odd) == 1
    whole = scrfd.detect(cv2.resize(rgb, (640, 640)))
    assert np.abs(odd.boxes[0] * 640 / 333 - whole.boxes[0]).max() < 0.05 * 640


def test_onnx_backends_fail_clearly_on_bad_files(tmp_path):
    with pytest.raises(UsageError, match="--model PATH"):
        create_detector("scrfd")
    with pytest.raises(UsageError, match="--landmarker-model PATH"):
        create_landmarker("2d106")
    with pytest.raises(RedubError, match="not found"):
        create_detector("scrfd", model=tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(RedubError, match="cannot load"):
        create_detector("scrfd", model=junk)
    with pytest.raises(RedubError, match="cannot load"):
        create_landmarker("2d106", model=junk)


def make_2d106_model(path: Path) -> np.ndarray:
    """A stand-in for 2d106det built with the onnx helper API (no torch needed).

    Every point sits at the red-weighted centroid of the crop, point k shifted right by
    0.5 k / 106 crop half-widths: tests see crop geometry, colour order and point order.
    Returns that per-point shift (106, 2) in normalised units.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    size = 192
    u = np.arange(size, dtype=np.float32) / (size / 2) - 1  # pixel centre -> [-1, 1]
    shift = np.zeros((106, 2), np.float32)
    shift[:, 0] = 0.5 * np.arange(106) / 106
    consts = {
        "gx": np.broadcast_to(u[None, :], (size, size)).reshape(1, 1, size, size),
        "gy": np.broadcast_to(u[:, None], (size, size)).reshape(1, 1, size, size),
        "starts": np.array([0], np.int64), "ends": np.array([1], np.int64),
        "axes1": np.array([1], np.int64), "all": np.array([1, 2, 3], np.int64),
        "shape2": np.array([1, 2], np.int64), "reps": np.array([1, 106], np.int64),
        "shift": shift.reshape(1, 212),
    }
    nodes = [
        helper.make_node("Slice", ["data", "starts", "ends", "axes1"], ["red"]),
        helper.make_node("ReduceSum", ["red", "all"], ["total"], keepdims=1),
        helper.make_node("Mul", ["red", "gx"], ["wx"]),
        helper.make_node("Mul", ["red", "gy"], ["wy"]),
        helper.make_node("ReduceSum", ["wx", "all"], ["sx"], keepdims=1),
        helper.make_node("ReduceSum", ["wy", "all"], ["sy"], keepdims=1),
        helper.make_node("Div", ["sx", "total"], ["cx"]),
        helper.make_node("Div", ["sy", "total"], ["cy"]),
        helper.make_node("Concat", ["cx", "cy"], ["c4"], axis=3),
        helper.make_node("Reshape", ["c4", "shape2"], ["c"]),
        helper.make_node("Tile", ["c", "reps"], ["tiled"]),
        helper.make_node("Add", ["tiled", "shift"], ["fc1"]),
    ]
    graph = helper.make_graph(
        nodes, "fake2d106",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 212])],
        [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return shift


def test_2d106_landmarker_crop_colour_and_point_order(tmp_path):
    model = tmp_path / "fake_2d106.onnx"
    shift = make_2d106_model(model)
    marker = create_landmarker("2d106", model=model)
    image = np.zeros((300, 400, 3), np.uint8)
    cv2.circle(image, (220, 150), 6, (255, 0, 0), -1)  # red: what the model follows
    cv2.circle(image, (170, 110), 6, (0, 0, 255), -1)  # blue: found if channels were swapped
    box = np.array([[160.0, 90.0, 260.0, 190.0]])
    points, scores = marker.landmarks(image, box)
    assert points.shape == (1, 68, 2) and 0.0 <= scores[0] <= 1.0
    from engine.face.landmark106 import MAP_106_TO_68

    half = 100 * 1.5 / 2  # crop half-width in image pixels
    expected = np.array([220.0, 150.0]) + shift[MAP_106_TO_68] * half
    assert np.abs(points[0] - expected).max() < 1.0
    # The map is a one-to-one choice of 68 of the 106 points.
    assert len(set(MAP_106_TO_68.tolist())) == 68 and MAP_106_TO_68.max() < 106


@needs_media
def test_2d106_landmarker_runs_in_the_analysis(tmp_path):
    from engine.face.analysis import analyze_range

    model = tmp_path / "fake_2d106.onnx"
    make_2d106_model(model)
    a = analyze_range(MEDIA / "retalk_face3_590.mp4", 0.0, 0.4, landmarker="2d106",
                      landmarker_options={"model": str(model)})
    # The stand-in's points are no face; detections keep them on it for a while.
    assert len(a) == 10 and a.found[:5].all() and a.landmarks.shape == (10, 68, 2)
    assert a.config["landmarker"][0] == "2d106"
