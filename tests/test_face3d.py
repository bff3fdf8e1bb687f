"""3D face coefficients (Video ReTalking's Deep3DFaceRecon stage): architecture, the standard
landmarks, the alignment and the per-clip coefficients with their cache."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from engine.face import geometry as geo
from engine.face.analysis import Flag, analyze_range
from engine.face.face3d import (MODEL_ID, ROW, Face3D, align_face, clip_coefficients,
                                deep3d_points)
from engine.media.reader import VideoReader
from engine.models.session import clear_sessions
from engine.models.store import import_model
from engine.stabilize.backend import Framing
from engine.stabilize.geometric import GeometricStabilizer
from tests.face_clip import write_face_clip
from tests.retalking_factory import template_3d

TINY = {"blocks": (1, 1, 1, 1), "width": 4}
FRAMING = Framing(centre=(0.5, 0.6), side=1.5, size=128)


# -- architecture and standard landmarks ---------------------------------------------------------

def test_the_official_checkpoint_layout_loads_strictly(tmp_path):
    torch = pytest.importorskip("torch")
    from installer.face3d_arch import ReconNet

    with torch.device("meta"):  # shapes only
        full = ReconNet().state_dict()  # ResNet-50: the official names and shapes
    assert len(full) == 332
    assert full["backbone.conv1.weight"].shape == (64, 3, 7, 7)
    assert full["backbone.layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert full["backbone.layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert [tuple(full[f"final_layers.{i}.weight"].shape) for i in range(7)] == \
        [(n, 2048, 1, 1) for n in (80, 64, 80, 3, 27, 2, 1)]

    torch.manual_seed(0)
    net = ReconNet(**TINY).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    torch.save({"net_recon": net.state_dict(), "epoch": 20}, tmp_path / "face3d.pth")
    loaded = ReconNet(**TINY).eval()
    state = torch.load(tmp_path / "face3d.pth", map_location="cpu", weights_only=True)
    loaded.load_state_dict(state["net_recon"], strict=True)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        out = loaded(x)
        assert out.shape == (2, 257)
        assert torch.equal(out, net(x))
    with pytest.raises(RuntimeError):
        ReconNet(blocks=(1, 1, 2, 1), width=4).load_state_dict(state["net_recon"], strict=True)


def test_lm3d_std_is_the_five_point_reduction_of_the_mat(tmp_path):
    pytest.importorskip("torch")
    scipy_io = pytest.importorskip("scipy.io")
    from installer.face3d_arch import load_lm3d_std

    lm = np.random.default_rng(3).normal(size=(68, 3))
    scipy_io.savemat(tmp_path / "similarity_Lm3D_all.mat", {"lm": lm})
    expected = np.stack([(lm[36] + lm[39]) / 2, (lm[42] + lm[45]) / 2, lm[30], lm[48], lm[54]])
    np.testing.assert_allclose(load_lm3d_std(tmp_path / "similarity_Lm3D_all.mat"), expected,
                               rtol=0, atol=1e-15)
    with open(tmp_path / "similarity_Lm3D_all.mat", "rb") as f:  # as read out of BFM.zip
        np.testing.assert_array_equal(load_lm3d_std(f), load_lm3d_std(
            tmp_path / "similarity_Lm3D_all.mat"))


# -- alignment -----------------------------------------------------------------------------------

def test_align_face_recovers_a_known_placement_and_centres_the_face():
    face3d = template_3d()
    lm3d_std = deep3d_points(face3d)
    h, w = 240, 320
    scale, angle, (tx, ty) = 95.0, np.radians(12), (170.0, 131.0)
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    up = face3d[:, :2] @ rot.T + (tx, ty)  # y up, as Deep3DFaceRecon measures it
    landmarks = np.stack([up[:, 0], h - 1 - up[:, 1]], 1)
    image = np.zeros((h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    centre = (tx, h - 1 - ty)  # where the 3D origin lands in the picture
    image[(xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= 30 ** 2] = 255

    aligned, params = align_face(image, landmarks, lm3d_std)

    assert aligned.shape == (224, 224, 3) and aligned.dtype == np.uint8
    np.testing.assert_allclose(params, [w, h, 102.0 / scale, tx, ty], rtol=1e-5)
    disc = aligned[..., 0] > 127
    ys, xs = np.nonzero(disc)
    assert abs(xs.mean() - 111.5) < 1.5 and abs(ys.mean() - 111.5) < 1.5
    assert abs(disc.sum() - np.pi * (30 * 102.0 / scale) ** 2) < 0.03 * disc.sum()


def test_align_face_outside_the_picture_is_black():
    lm3d_std = deep3d_points(template_3d())
    image = np.full((128, 128, 3), 200, np.uint8)
    up = template_3d()[:, :2] * 40 + (10, 118)  # a face at the top-left corner
    aligned, _ = align_face(image, np.stack([up[:, 0], 127 - up[:, 1]], 1), lm3d_std)
    assert (aligned[:80, :80] == 0).all() and (aligned[150:, 150:] == 200).all()


# -- per-clip coefficients -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random regressor exported in the contract, with ``lm3d_std`` metadata."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from installer.face3d_arch import ReconNet

    torch.manual_seed(2)
    net = ReconNet(**TINY).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("face3d") / "face3d.onnx"
    program = torch.onnx.export(net, (torch.rand(2, 3, 224, 224),), input_names=["image"],
                                output_names=["coeffs"], dynamo=True, opset_version=18,
                                dynamic_shapes={"image": {0: torch.export.Dim("B")}})
    program.model.metadata_props["lm3d_std"] = json.dumps(
        deep3d_points(template_3d()).tolist())
    program.save(str(path), external_data=False)
    return path


@pytest.fixture()
def installed(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("REDUB_MODELS_DIR", str(tmp_path / "models"))
    clear_sessions()
    import_model(tiny_model, MODEL_ID)
    yield
    clear_sessions()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_face_clip(tmp_path_factory.mktemp("face3d-clip") / "face.mp4", frames=10)


def _expected_rows(clip, analysis, frames) -> np.ndarray:
    """The rows of ``frames`` computed directly: the stabilizer's crop and the mapped landmarks."""
    stabilizer = GeometricStabilizer()
    stabilizer.prepare(analysis)
    crops, points = [], []
    with VideoReader(clip) as reader:
        for k in frames:
            crop = stabilizer.crops([reader.frame(analysis.start + k)], [k], FRAMING)[0]
            crops.append(crop.image)
            points.append(geo.apply(crop.transform, analysis.landmarks[k]))
    return Face3D().coefficients(np.stack(crops), np.stack(points))


def test_clip_coefficients_fill_faceless_frames_and_come_from_the_cache(clip, installed,
                                                                       monkeypatch):
    found = analyze_range(clip)
    assert found.found.all()
    flags = found.flags.copy()
    flags[[0, 4, 5, 9]] |= np.uint8(Flag.NOT_FOUND)
    analysis = dataclasses.replace(found, flags=flags)

    rows = clip_coefficients(clip, analysis, FRAMING)

    assert rows.shape == (len(analysis), ROW) and rows.dtype == np.float32
    own = [1, 2, 3, 6, 7, 8]
    np.testing.assert_allclose(rows[own], _expected_rows(clip, analysis, own), rtol=1e-5,
                               atol=1e-5)
    assert len({r.tobytes() for r in rows[own]}) == len(own)  # every face its own row
    for faceless, nearest in ((0, 1), (4, 3), (5, 6), (9, 8)):
        np.testing.assert_array_equal(rows[faceless], rows[nearest])
    assert (rows[:, 257:259] == FRAMING.size).all()  # the crop's width and height

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded on a cache hit")

    monkeypatch.setattr("engine.face.face3d.VideoReader", no_decoding)
    np.testing.assert_array_equal(clip_coefficients(clip, analysis, FRAMING), rows)
    with pytest.raises(AssertionError, match="decoded"):  # another framing is another entry
        clip_coefficients(clip, analysis, FRAMING.with_size(96))
