"""Face restorers: FFHQ alignment, the public ONNX contracts (models built here), and
``redub sync --restore`` end to end: only pixels inside the mouth mask change."""
from __future__ import annotations

import av
import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engine.cli import main
from engine.errors import RedubError, UsageError
from engine.face import geometry as geo
from engine.face.analysis import FaceFrame, Flag, analyze_range
from engine.lipsync.backend import Generated
from engine.mask import chin_cover, landmark_mask
from engine.media.audio import read_audio
from engine.media.frame import Frame, planes_from_av
from engine.media.probe import probe
from engine.models.store import import_model
from engine.pipeline import SyncSettings
from engine.project import RangeSettings
from engine.restore.align import FFHQ_512, ffhq_matrix, from_aligned, sampled_box, to_aligned
from engine.restore.backend import NoRestorer, create_restorer
from tests.conftest import shared_clip

# --- test models in the public contracts ---------------------------------------------------


def _image(name: str, size: int):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, size, size])


def _save(path, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the project accepts
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _red(path, size=512):
    """Whatever comes in, pure red (RGB 1, -1, -1) comes out: shows channel order and range."""
    colour = helper.make_tensor("colour", TensorProto.FLOAT, [1, 3, 1, 1], [1.0, -1.0, -1.0])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    return _save(path, [helper.make_node("Mul", ["input", "zero"], ["blank"]),
                        helper.make_node("Add", ["blank", "colour"], ["output"])],
                 [_image("input", size)], [_image("output", size)], [colour, zero])


def _unary(path, op, size=512):
    return _save(path, [helper.make_node(op, ["input"], ["output"])],
                 [_image("input", size)], [_image("output", size)])


def _codeformer(path, size=512):
    """-input * weight: the fidelity weight visibly reaches the model."""
    weight = helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1])
    return _save(path, [helper.make_node("Cast", ["weight"], ["w"], to=TensorProto.FLOAT),
                        helper.make_node("Neg", ["input"], ["negated"]),
                        helper.make_node("Mul", ["negated", "w"], ["output"])],
                 [_image("input", size), weight], [_image("output", size)])


def _halving(path):
    """512 in, 256 out: breaks the contract's (1,3,S,S) -> (1,3,S,S)."""
    return _save(path, [helper.make_node("AveragePool", ["input"], ["output"],
                                         kernel_shape=[2, 2], strides=[2, 2])],
                 [_image("input", 512)], [_image("output", 256)])


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("restorer-models")
    return {"red": _red(folder / "red.onnx"), "negate": _unary(folder / "negate.onnx", "Neg"),
            "codeformer": _codeformer(folder / "codeformer.onnx"),
            "identity256": _unary(folder / "identity256.onnx", "Identity", 256),
            "halving": _halving(folder / "halving.onnx"),
            "codeformer_no_weight": _unary(folder / "cf_no_weight.onnx", "Neg")}


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    monkeypatch.setenv("REDUB_MODELS_DIR", str(folder))
    return folder


# --- alignment and the restorer on a synthetic frame ---------------------------------------

W, H = 400, 320


def _face(scale=180.0, offset=(110.0, 60.0)) -> FaceFrame:
    landmarks = geo.TEMPLATE_68 * scale + offset
    return FaceFrame(0, 0.0, Flag(0), 1.0, np.zeros(4), landmarks, geo.five_points(landmarks),
                     geo.to_canonical(landmarks), np.zeros(3), np.array([0, 0, W, H], float))


def _picture(seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (H, W, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 4) * 3 - 255, 0, 255).astype(np.uint8)


def _frame(rgb: np.ndarray) -> Frame:
    return Frame(0, 0.0, 0, "rgb24", W, H, (rgb,), _rgb=rgb)


def _generated(face: FaceFrame, rgb: np.ndarray) -> Generated:
    box = (150, 190, 290, 300)  # around the mouth and chin of _face()
    x0, y0, x1, y1 = box
    # A "new mouth": the picture shifted, its landmarks moved down a little.
    image = np.roll(rgb, 7, axis=0)[y0:y1, x0:x1].copy()
    return Generated(box, image, face.landmarks + (0.0, 4.0))


def _mouth_mask(face: FaceFrame, gen: Generated) -> np.ndarray:
    """Where the job may change pixels: the target's and the generated mouth's masks, and the
    cover under a target chin the generated one sits above."""
    settings = SyncSettings().mask
    return np.maximum.reduce([landmark_mask(face.landmarks, gen.box, settings),
                              landmark_mask(gen.landmarks, gen.box, settings),
                              chin_cover(face.landmarks, gen.landmarks, face.transform, gen.box,
                                         settings)])


def test_alignment_maps_the_keypoints_to_the_ffhq_template_and_back():
    face = _face()
    for size in (512, 256):
        m = ffhq_matrix(face.keypoints, size)
        # The 68-point template's keypoints are not FFHQ's exactly: close, not equal.
        assert np.abs(geo.apply(m, face.keypoints) - FFHQ_512 * size / 512).max() < 0.05 * size
    rgb = _picture()
    m = ffhq_matrix(face.keypoints, 512)
    x0, y0, x1, y1 = sampled_box(m, 512, W, H)
    aligned = to_aligned(rgb[y0:y1, x0:x1], (x0, y0), m, 512)
    # The aligned square spans frame rows 35..267 here: the box reaches past its bottom.
    box = (140, 100, 300, 300)
    back, coverage = from_aligned(aligned.astype(np.float32), m, box)
    assert coverage[:160].min() > 0.999 and coverage[-20:].max() == 0.0
    inside = coverage > 0.999
    err = np.abs(back - rgb[100:300, 140:300].astype(np.float32))[inside]
    assert err.mean() < 2.0


def test_identity_model_gives_back_the_generated_crop_and_nothing_outside_the_mask(
        built, models_dir):
    import_model(built["identity256"], "gpen_bfr_512")  # S=256: the template scales
    face, rgb = _face(), _picture()
    gen = _generated(face, rgb)
    out = create_restorer("gpen", strength=1.0, mask=SyncSettings().mask).restore(
        _frame(rgb), gen, face)
    mask = _mouth_mask(face, gen)
    assert out.box == gen.box and np.array_equal(out.landmarks, gen.landmarks)
    assert np.array_equal(out.image[mask == 0], gen.image[mask == 0])
    # Where the mask is full the model saw the generated mouth; it comes back through two
    # warps (and a 2.5x reduction) nearly unchanged.
    core = mask == 1.0
    assert core.sum() > 2000
    err = np.abs(out.image.astype(int) - gen.image.astype(int))[core]
    assert err.mean() < 6.0


@pytest.mark.parametrize("strength", [1.0, 0.5, 0.0])
def test_strength_mixes_the_restored_face_into_the_mask(built, models_dir, strength):
    import_model(built["red"], "gfpgan_1.4")
    face, rgb = _face(), _picture()
    gen = _generated(face, rgb)
    out = create_restorer("gfpgan", strength=strength, mask=SyncSettings().mask).restore(
        _frame(rgb), gen, face)
    mask = _mouth_mask(face, gen)
    core = mask == 1.0
    expected = gen.image[core] * (1 - strength) + np.array([255, 0, 0]) * strength
    assert np.abs(out.image[core] - expected).max() <= 1.0
    assert np.array_equal(out.image[mask == 0], gen.image[mask == 0])
    if strength == 0.0:
        assert out is gen


def test_codeformer_fidelity_reaches_the_weight_input(built, models_dir):
    import_model(built["codeformer"], "codeformer")
    face = _face()
    rgb = np.full((H, W, 3), 100, np.uint8)
    gen = Generated((150, 190, 290, 300), rgb[190:300, 150:290].copy(), face.landmarks)
    mask = _mouth_mask(face, gen)
    for fidelity in (0.0, 0.5, 1.0):
        out = create_restorer("codeformer", strength=1.0, fidelity=fidelity,
                              mask=SyncSettings().mask).restore(_frame(rgb), gen, face)
        x = 100 / 127.5 - 1
        want = (1 - x * fidelity) * 127.5
        assert np.abs(out.image[mask == 1.0].astype(float) - want).max() <= 1.0


def test_settings_are_checked(built, models_dir):
    import_model(built["red"], "gfpgan_1.4")
    with pytest.raises(UsageError, match="strength 1.5 is outside 0..1"):
        create_restorer("gfpgan", strength=1.5)
    with pytest.raises(UsageError, match="unknown restorer 'esrgan'"):
        create_restorer("esrgan")
    assert isinstance(create_restorer("none", strength=0.3), NoRestorer)


def test_wrong_contracts_are_refused_naming_the_mismatch(built, models_dir):
    with pytest.raises(RedubError, match=r"output .* has shape \(1,3,256,256\), expected "
                                         r"\(1,3,S,S\) with S=512"):
        import_model(built["halving"], "gfpgan_1.4")
    with pytest.raises(RedubError, match=r"has 1 inputs .*expected 2 \('input', 'weight'\)"):
        import_model(built["codeformer_no_weight"], "codeformer")


def test_project_strength_reaches_the_engine():
    assert RangeSettings(restorer="gpen", restorer_strength=0.3).to_sync_settings() \
        == SyncSettings(restorer="gpen", restore_strength=0.3)


# --- redub sync --restore, end to end -------------------------------------------------------

RANGE = (4.4, 5.4)  # talk_d12 frames 110-134, where its face is tracked throughout
FPS = 25


def _sync_args(clip, dub, out, *extra):
    return ["sync", str(clip), "--audio", str(dub), "--range", f"{RANGE[0]}-{RANGE[1]}",
            "--train-range", "4-6.36", "--codec", "ffv1", "-o", str(out), *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, built):
    """One `redub sync` per restorer on a shared clip, sharing the face analysis."""
    clip = shared_clip("talk_d12_512.mp4")
    dub = shared_clip("speech_radio31_16k.wav")
    work = tmp_path_factory.mktemp("restore-runs")
    seen: dict[int, Generated] = {}

    def recording(self, frame, gen, face):
        seen[frame.index] = gen
        return gen

    outputs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REDUB_CACHE_DIR", str(work / "cache"))
        mp.setenv("REDUB_MODELS_DIR", str(work / "models"))
        import_model(built["red"], "gfpgan_1.4")
        import_model(built["negate"], "gpen_bfr_512")
        import_model(built["codeformer"], "codeformer")
        # The default restorer records each frame's generated crop: the mouth masks.
        mp.setattr(NoRestorer, "restore", recording)
        for name, extra in {"none": ("--restore", "none"),
                            "gfpgan": ("--restore", "gfpgan"),
                            "gfpgan0": ("--restore", "gfpgan", "--restore-strength", "0"),
                            "gpen": ("--restore", "gpen", "--restore-strength", "1"),
                            "codeformer": ("--restore", "codeformer",
                                           "--restore-fidelity", "0.5")}.items():
            out = work / f"{name}.mkv"
            assert main(_sync_args(clip, dub, out, *extra)) == 0
            outputs[name] = out
        analysis = analyze_range(clip, 4.0, 6.36)
    return {"clip": clip, "dub": dub, "out": outputs, "gen": seen, "analysis": analysis}


def _planes(path):
    with av.open(str(path)) as c:
        return [planes_from_av(f) for f in c.decode(video=0)]


def _mouth_in_frame(runs, index) -> np.ndarray:
    gen = runs["gen"][index]
    face = runs["analysis"].frame(index)
    full = np.zeros((512, 512), np.float32)
    x0, y0, x1, y1 = gen.box
    full[y0:y1, x0:x1] = _mouth_mask(face, gen)
    return full


@pytest.mark.parametrize("name", ["gfpgan", "gpen", "codeformer"])
def test_restorers_change_only_pixels_inside_the_mouth_mask(runs, name):
    none, restored = _planes(runs["out"]["none"]), _planes(runs["out"][name])
    assert len(none) == len(restored) == 183
    edited = range(int(RANGE[0] * FPS), int(RANGE[1] * FPS))
    assert sorted(runs["gen"]) == list(edited)  # frames outside the range never reach it
    changed = 0
    for i, (a, b) in enumerate(zip(none, restored)):
        if i not in edited:
            assert all(np.array_equal(p, q) for p, q in zip(a, b)), f"frame {i} changed"
            continue
        mouth = _mouth_in_frame(runs, i) > 0
        luma = a[0] != b[0]
        assert not (luma & ~mouth).any(), f"frame {i}: luma changed outside the mouth mask"
        # A 4:2:0 chroma sample changes when a pixel of its 2x2 footprint does.
        footprint = mouth.reshape(256, 2, 256, 2).any(axis=(1, 3))
        for p in (1, 2):
            assert not ((a[p] != b[p]) & ~footprint).any(), f"frame {i}: chroma outside"
        changed += luma.sum() > 0.2 * mouth.sum()
    assert changed == len(edited)


def test_strength_zero_is_no_restoration(runs):
    none, zero = _planes(runs["out"]["none"]), _planes(runs["out"]["gfpgan0"])
    assert all(np.array_equal(p, q) for a, b in zip(none, zero) for p, q in zip(a, b))


def test_restored_output_keeps_size_rate_and_audio(runs):
    src, out = probe(runs["clip"]).video[0], probe(runs["out"]["gfpgan"])
    video = out.video[0]
    assert (video.width, video.height, video.frame_count) == (512, 512, 183)
    assert video.frame_rate == src.frame_rate == FPS
    restored = read_audio(runs["out"]["gfpgan"])
    assert abs(restored.duration - video.duration) < 0.1
    assert np.array_equal(restored.samples, read_audio(runs["out"]["none"]).samples)
    # The dub (placed at 0) is what sounds inside the range.
    inside = dict(start=RANGE[0] + 0.2, duration=RANGE[1] - RANGE[0] - 0.4, rate=16000,
                  channels=1)
    heard = read_audio(runs["out"]["gfpgan"], **inside).samples[:, 0]
    dub = read_audio(runs["dub"], **inside).samples[:, 0]
    assert np.corrcoef(heard, dub)[0, 1] > 0.95


def test_sync_reports_a_missing_or_wrong_model(built, models_dir, tmp_path, capsys):
    clip = shared_clip("talk_d12_512.mp4")
    dub = shared_clip("speech_radio31_16k.wav")
    assert main(_sync_args(clip, dub, tmp_path / "a.mkv", "--restore", "gpen")) == 1
    err = capsys.readouterr().err
    assert "model 'gpen_bfr_512' (restorer) is missing" in err and "gpen_bfr_512.onnx" in err
    # A file copied in by hand is checked against the contract on first use.
    models_dir.mkdir(exist_ok=True)
    (models_dir / "gfpgan_1.4.onnx").write_bytes(built["halving"].read_bytes())
    assert main(_sync_args(clip, dub, tmp_path / "b.mkv", "--restore", "gfpgan")) == 1
    err = capsys.readouterr().err
    assert "does not match the model contract" in err and "(1,3,256,256)" in err
    assert main(_sync_args(clip, dub, tmp_path / "c.mkv", "--restore", "gfpgan",
                           "--restore-strength", "2")) == 2
    assert not any(tmp_path.glob("*.mkv"))
