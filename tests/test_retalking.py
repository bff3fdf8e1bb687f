"""Video ReTalking at run time: D-Net's coefficient windows (the official ``transform_semantic``
and ``find_crop_norm_ratio``), its FFHQ-style framing, the D-Net stabilizer's crops on a stand-in
D-Net, and the ReTalking generator (ENet fed the masked original and the GPEN-enhanced
reference) on stand-in models, through ``redub sync`` end to end."""
from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.cli import main
from engine.errors import RedubError, UsageError
from engine.face import face3d
from engine.face import geometry as geo
from engine.face.analysis import analyze_range
from engine.lipsync import batches, retalking
from engine.lipsync.backend import create_generator
from engine.lipsync.wav2lip import FRAMING as WAV2LIP_FRAMING
from engine.media.frame import planes_from_av
from engine.media.reader import VideoReader
from engine.models.store import import_model
from engine.stabilize import dnet
from engine.stabilize.backend import Framing, create_stabilizer
from engine.stabilize.dnet import (FRAMING, crop_norm_ratio, ffhq_framing, semantic_window,
                                   window_indices)
from engine.stabilize.geometric import GeometricStabilizer
from tests.conftest import shared_clip
from tests.face_clip import write_face_clip
from tests.generator_harness import edited_frames_change_only_in_mask, generated, sync_context
from tests.media_factory import decode_all

ROW = 262
CENTER = np.linspace(-0.5, 0.5, 64).astype(np.float32)  # stand-in expression templates
MOUTH = np.linspace(0.3, -0.2, 64).astype(np.float32)


# -- the official maths, restated from utils/inference_utils.py ----------------------------

def _official_transform_semantic(semantic, frame_index, ratio):
    index = [min(max(i, 0), len(semantic) - 1) for i in range(frame_index - 13, frame_index + 13)]
    coeff = semantic[index, ...]
    crop = coeff[:, 259:262]
    crop[:, -3] = crop[:, -3] * ratio
    return np.concatenate([coeff[:, 80:144], coeff[:, 224:227], coeff[:, 254:257], crop], 1).T


def _rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, ROW)).astype(np.float32)
    rows[:, 259] = rng.uniform(0.8, 1.2, n)  # align_img's scale: positive
    return rows


def test_windows_clamp_at_both_ends_as_the_official():
    assert window_indices(0, 50).tolist() == [0] * 14 + list(range(1, 13))
    assert window_indices(20, 50).tolist() == list(range(7, 33))
    assert window_indices(49, 50).tolist() == list(range(36, 50)) + [49] * 12
    assert window_indices(2, 3).tolist() == [0] * 12 + [1, 2] + [2] * 12


def test_semantic_window_is_transform_semantic_with_the_template_expression():
    rows = _rows(40)
    kept = rows.copy()
    for k, ratio in ((0, 1.0), (17, 0.93), (39, 1.1)):
        ours = semantic_window(rows, k, ratio, CENTER)
        want = _official_transform_semantic(rows.copy(), k, np.float32(ratio))
        assert ours.shape == (73, 26) and ours.dtype == np.float32
        np.testing.assert_array_equal(ours[64:], want[64:])
        # The expression rows are the template's on every frame (coeff[:, :64, :] = expression).
        np.testing.assert_array_equal(ours[:64], np.repeat(CENTER[:, None], 26, 1))
    # The crop scale (row 70) is scaled; its shift (71, 72) is not.
    plain, scaled = semantic_window(rows, 5, 1.0, CENTER), semantic_window(rows, 5, 2.0, CENTER)
    np.testing.assert_array_equal(scaled[70], plain[70] * 2)
    np.testing.assert_array_equal(scaled[71:], plain[71:])
    np.testing.assert_array_equal(rows, kept)  # the clip's rows are not changed


def test_crop_norm_ratio_takes_the_most_similar_frame():
    rows = _rows(30, seed=1)
    source = _rows(1, seed=9)[0]  # not a frame of the clip
    # Frame 7: expression and angles close. Frame 3: the expression equal but the angles off by
    # more than 0.3 / 0.7 of frame 7's expression difference: angles weigh more.
    rows[7, 80:144] = source[80:144] + 0.05
    rows[7, 224:227] = source[224:227] + 0.01
    rows[3, 80:144] = source[80:144]
    rows[3, 224:227] = source[224:227] + 0.05
    assert crop_norm_ratio(source, rows) == source[259] / rows[7, 259]
    rows[3, 224:227] = source[224:227] + 0.02  # 0.7 * 0.02 < 0.3 * 0.05 + 0.7 * 0.01
    assert crop_norm_ratio(source, rows) == source[259] / rows[3, 259]
    # A frame of the clip is its own nearest: ratio 1 (the official non one-shot mode).
    assert crop_norm_ratio(rows[20], rows) == 1.0


def test_the_dnet_crop_is_ffhqs_and_holds_the_mouth_and_chin():
    lm = geo.TEMPLATE_68
    # The official align_face on the template: centre eye_avg + 0.1 eye_to_mouth, side
    # 2 * max(2 |eye_to_eye|, 1.8 |eye_to_mouth|).
    eyes = (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2
    to_mouth = (lm[48] + lm[54]) / 2 - eyes
    side = 2 * max(2 * np.hypot(*(lm[42:48].mean(0) - lm[36:42].mean(0))),
                   1.8 * np.hypot(*to_mouth))
    np.testing.assert_allclose(FRAMING.centre, eyes + 0.1 * to_mouth, atol=1e-12)
    assert FRAMING.side == pytest.approx(side) and FRAMING.size == 256
    # Moved and scaled landmarks give the same box, moved and scaled.
    moved = ffhq_framing(lm * 3 + (1, 2), 256)
    np.testing.assert_allclose(moved.centre, np.array(FRAMING.centre) * 3 + (1, 2))
    assert moved.side == pytest.approx(3 * FRAMING.side)
    half = FRAMING.side / 2
    for point in lm[list(range(48, 68)) + [7, 8, 9]]:  # the lips and the chin
        assert np.all(np.abs(point - FRAMING.centre) < half - 0.05), point


# -- stand-in models in the contracts --------------------------------------------------------

def _save(graph, path, props=None):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    if props:
        helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _io(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _ints(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _zero():
    return numpy_helper.from_array(np.zeros((), np.float32), "zero")


def _identity_dnet(path, props=True):
    """stabilized = image; the coefficients are read (times zero: a NaN would show)."""
    graph = helper.make_graph([
        helper.make_node("ReduceMean", ["coeffs", "axes"], ["level"], keepdims=1),
        helper.make_node("Unsqueeze", ["level", "last"], ["level4"]),
        helper.make_node("Mul", ["level4", "zero"], ["nothing"]),
        helper.make_node("Add", ["image", "nothing"], ["stabilized"]),
    ], "dnet_identity", [_io("image", ["B", 3, 256, 256]), _io("coeffs", ["B", 73, 26])],
        [_io("stabilized", ["B", 3, 256, 256])],
        [_ints("axes", [1, 2]), _ints("last", [3]), _zero()])
    meta = {"expression_center": json.dumps(CENTER.tolist()),
            "expression_mouth": json.dumps(MOUTH.tolist())} if props else None
    return _save(graph, path, meta)


def _reference_enet(path):
    """image = the face input's reference channels (3..5); the mel is read (times zero)."""
    graph = helper.make_graph([
        helper.make_node("Slice", ["face", "starts", "ends", "axis"], ["reference"]),
        helper.make_node("ReduceMean", ["audio"], ["level"], keepdims=1),
        helper.make_node("Mul", ["level", "zero"], ["nothing"]),
        helper.make_node("Add", ["reference", "nothing"], ["image"]),
    ], "enet_reference", [_io("audio", ["B", 1, 80, 16]), _io("face", ["B", 6, 384, 384])],
        [_io("image", ["B", 3, 384, 384])],
        [_ints("starts", [3]), _ints("ends", [6]), _ints("axis", [1]), _zero()])
    return _save(graph, path)


def _gpen(path, op="Identity"):
    graph = helper.make_graph([helper.make_node(op, ["input"], ["output"])], "gpen_standin",
                              [_io("input", [1, 3, 512, 512])], [_io("output", [1, 3, 512, 512])])
    return _save(graph, path)


def _face3d(path):
    """coeffs: the picture's mean colour spread over the 257 columns; plausible 3D landmarks."""
    spread = np.linspace(0.1, 1.0, 3 * 257, dtype=np.float32).reshape(3, 257)
    graph = helper.make_graph([
        helper.make_node("GlobalAveragePool", ["image"], ["mean"]),
        helper.make_node("Flatten", ["mean"], ["flat"]),
        helper.make_node("MatMul", ["flat", "spread"], ["coeffs"]),
    ], "face3d_standin", [_io("image", ["B", 3, 224, 224])], [_io("coeffs", ["B", 257])],
        [numpy_helper.from_array(spread, "spread")])
    lm3d = [[-0.31, 0.29, 0.13], [0.31, 0.29, 0.13], [0.0, 0.0, 0.45], [-0.25, -0.36, 0.2],
            [0.25, -0.36, 0.2]]
    return _save(graph, path, {"lm3d_std": json.dumps(lm3d)})


def _install(folder, gpen="Identity"):
    folder.mkdir(exist_ok=True)
    import_model(_identity_dnet(folder / "dnet.onnx"), "retalking_dnet")
    import_model(_reference_enet(folder / "enet.onnx"), "retalking_enet")
    import_model(_gpen(folder / "gpen.onnx", gpen), "gpen_bfr_512")
    import_model(_face3d(folder / "face3d.onnx"), "retalking_face3d")


# One face analysis per clip serves every test of the module; each test has its own models.
pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_face_clip(tmp_path_factory.mktemp("retalking-clip") / "face.mp4", frames=20)


@pytest.fixture(scope="module")
def dub():
    return shared_clip("speech_radio31_16k.wav")


def _known_coefficients(monkeypatch, n_seed=3):
    """clip_coefficients answers with known rows (and records what it was asked)."""
    asked = []

    def fake(video, analysis, framing, providers=None, use_cache=True):
        asked.append((video, framing))
        return _rows(len(analysis), seed=n_seed)

    monkeypatch.setattr(face3d, "clip_coefficients", fake)
    return asked


def _frames(clip, analysis, ks):
    with VideoReader(clip) as reader:
        return [reader.frame(analysis.start + k) for k in ks]


def test_dnet_with_an_identity_model_gives_the_geometric_crop(tmp_path, clip, monkeypatch):
    import_model(_identity_dnet(tmp_path / "dnet.onnx"), "retalking_dnet")
    asked = _known_coefficients(monkeypatch)
    analysis = analyze_range(clip)
    ks = [2, 3, 9, 14, 15, 16, 17, 19, 0]  # more than one batch of 8
    frames = _frames(clip, analysis, ks)
    stabilizer = create_stabilizer("dnet")
    stabilizer.prepare(analysis)
    fed = []
    run = stabilizer.session.run
    monkeypatch.setattr(stabilizer.session, "run", lambda feed: fed.append(feed) or run(feed))
    geometric = GeometricStabilizer()
    geometric.prepare(analysis)
    try:
        assert asked == [(analysis.source, FRAMING)]
        # What D-Net gets: the geometric crop at the FFHQ framing in [-1, 1], each frame's
        # coefficient window with the centre template.
        crops = stabilizer.crops(frames, ks, retalking.FRAMING)
        assert [len(f["image"]) for f in fed] == [8, 1]
        pictures = np.concatenate([f["image"] for f in fed])
        plain = np.stack([c.image for c in geometric.crops(frames, ks, FRAMING)])
        np.testing.assert_allclose(pictures, plain.transpose(0, 3, 1, 2) / 127.5 - 1, atol=1e-6)
        rows = _rows(len(analysis), seed=3)
        windows = np.concatenate([f["coeffs"] for f in fed])
        for k, window in zip(ks, windows):
            np.testing.assert_array_equal(window, semantic_window(rows, k, 1.0, CENTER))
        # The neutral face framed as asked: the geometric crop there, up to resampling twice
        # (the D-Net crop has less detail than a 384 crop: edges differ) and the official
        # 8-bit truncation. Blurred, the two agree to a pixel level or so; a shift of one
        # crop pixel would differ by 9 to 35 levels at the 99th percentile (measured).
        for framing in (retalking.FRAMING, WAV2LIP_FRAMING,
                        Framing(centre=(0.5, 0.6), side=1.8, size=200)):
            crops = stabilizer.crops(frames, ks, framing)
            want = geometric.crops(frames, ks, framing)
            sigma = framing.size / 96
            for got, ref in zip(crops, want):
                np.testing.assert_array_equal(got.transform, ref.transform)
                assert got.image.shape == ref.image.shape and got.image.dtype == np.uint8
                diff = got.image.astype(int) - ref.image
                assert np.abs(diff).mean() < 1.2 and -0.3 < diff.mean() < 0, framing
                low = np.abs(cv2.GaussianBlur(got.image.astype(np.float32), (0, 0), sigma)
                             - cv2.GaussianBlur(ref.image.astype(np.float32), (0, 0), sigma))
                assert low.mean() < 0.6 and np.percentile(low, 99) < 4, framing
            if framing.side > FRAMING.side:
                # Beyond the D-Net crop: the geometric crop's own pixels.
                inner, outside = dnet._between(framing)
                assert outside.mean() > 0.2
                for got, ref in zip(crops, want):
                    np.testing.assert_array_equal(got.image[outside], ref.image[outside])
    finally:
        stabilizer.close()
        geometric.close()


def test_dnet_options_and_a_model_without_templates(tmp_path, clip, monkeypatch):
    _known_coefficients(monkeypatch)
    analysis = analyze_range(clip)
    import_model(_identity_dnet(tmp_path / "dnet.onnx"), "retalking_dnet")
    smile = create_stabilizer("dnet", expression="mouth")
    smile.prepare(analysis)
    window = smile.window(10)
    smile.close()
    # The official window of 26 frames, with the smile template written in.
    assert window.shape == (73, 26)
    np.testing.assert_array_equal(window[:64, 0], MOUTH)
    with pytest.raises(UsageError, match="unknown D-Net expression 'grin'"):
        create_stabilizer("dnet", expression="grin")
    import_model(_identity_dnet(tmp_path / "bare.onnx", props=False), "retalking_dnet")
    bare = create_stabilizer("dnet")
    with pytest.raises(RedubError, match="no readable 'expression_center'") as err:
        bare.prepare(analysis)
    assert "retalking_dnet.onnx" in str(err.value) and "\n" not in str(err.value)


def test_enet_gets_the_masked_original_the_enhanced_reference_and_the_mel(tmp_path, clip,
                                                                           dub, monkeypatch):
    _install(tmp_path / "standins", gpen="Neg")  # GPEN stand-in: the negative
    asked = _known_coefficients(monkeypatch)
    ctx = sync_context(clip, dub, (0.2, 0.6))
    ctx.stabilizer = "dnet"
    ks = np.flatnonzero(ctx.edit & ctx.analysis.found)
    assert len(ks) == 10
    generator = create_generator("retalking")
    assert generator.batch == 8  # CPU
    generator.prepare(ctx)
    generator.prepare(ctx)  # a re-plan keeps the D-Net stabilizer and its coefficients
    assert len(asked) == 1
    fed = []
    run = generator.session.run
    monkeypatch.setattr(generator.session, "run", lambda feed: fed.append(feed) or run(feed))
    try:
        results = generated(generator, ctx, ks, threads=2)
    finally:
        generator.close()
    assert [len(f["face"]) for f in fed] == [8, 2]  # a fixed grid, whichever thread asked
    np.testing.assert_array_equal(np.concatenate([f["audio"] for f in fed]),
                                  ctx.dub_audio.windows[ks][:, None])
    faces = np.concatenate([f["face"] for f in fed])
    geometric = GeometricStabilizer()
    geometric.prepare(ctx.analysis)
    plain = np.stack([c.image for c in geometric.crops([f for f, _ in results], ks.tolist(),
                                                       retalking.FRAMING)])
    geometric.close()
    bgr = plain[..., ::-1].transpose(0, 3, 1, 2) / 255.0
    # The original, BGR in [0, 1], rows 192.. zeroed.
    np.testing.assert_allclose(faces[:, :3, :192], bgr[:, :, :192], atol=1e-6)
    assert not faces[:, :3, 192:].any()
    # The reference: the (identity) D-Net face enhanced by GPEN (here its negative) over the
    # whole crop, which the FFHQ-aligned square covers.
    error = np.abs(faces[:, 3:] - (1 - bgr))
    assert error.mean() < 0.01 and np.percentile(error, 99) < 0.05
    # Back in the frame: ENet's face (the reference) in the crop, the frame elsewhere.
    for k, (frame, gen) in zip(ks[::3], results[::3]):
        x0, y0, x1, y1 = gen.box
        assert gen.image.shape == (y1 - y0, x1 - x0, 3)
        np.testing.assert_array_equal(gen.landmarks, ctx.analysis.landmarks[k])
        cx, cy = np.round(ctx.analysis.landmarks[k][33] - (x0, y0)).astype(int)
        original = frame.rgb_region(x0, y0, x1, y1)
        drawn = gen.image[cy - 5:cy + 5, cx - 5:cx + 5].astype(int)
        assert np.abs(drawn - (255 - original[cy - 5:cy + 5, cx - 5:cx + 5])).mean() < 12


def test_gpu_providers_run_enet_in_batches_of_16(monkeypatch):
    monkeypatch.setattr(batches, "provider_order", lambda preferred: [
        ("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})])
    assert create_generator("retalking").batch == 16
    assert create_generator("retalking", batch=2).batch == 2


def _clip_with_blanks(path, blank):
    """The face clip with ``blank`` frames black (no face there)."""
    import av

    frames = [f.rgb() for f in VideoReader(write_face_clip(path.with_name("src.mp4"), 20))
              .frames(0, 20)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "18", "bf": "0"}
        for i, rgb in enumerate(frames):
            picture = np.zeros_like(rgb) if i in blank else rgb
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


# The shared check draws a mask from the faceless frames' NaN landmarks too (they must not change
# at all, which is asserted below).
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_sync_with_retalking_and_dnet_changes_only_masked_pixels(tmp_path, dub):
    _install(tmp_path / "standins")
    blank = [9, 10]
    clip = _clip_with_blanks(tmp_path / "blanks.mp4", blank)
    analysis = analyze_range(clip)
    assert np.flatnonzero(~analysis.found).tolist() == blank
    edited = (0.2, 0.6)  # frames 5 .. 14
    out = tmp_path / "synced.mkv"
    assert main(["sync", str(clip), "--audio", str(dub), "--backend", "retalking",
                 "--stabilizer", "dnet", "--range", f"{edited[0]}-{edited[1]}",
                 "--codec", "ffv1", "-o", str(out)]) == 0
    changed = edited_frames_change_only_in_mask(clip, out, edited)
    # Every face frame of the range is redrawn; the faceless ones pass through untouched.
    assert changed == [5, 6, 7, 8, 11, 12, 13, 14]
    source, synced = decode_all(clip), decode_all(out)
    for i in blank:
        assert all(np.array_equal(a, b) for a, b in zip(planes_from_av(source[i]),
                                                        planes_from_av(synced[i])))
