"""LivePortrait mouth neutralisation: the keypoint maths on known values, what each network is
fed, the re-rendered face pasted into the face area only, and `redub sync --stabilizer
liveportrait` end to end with tiny random networks in FaceFusion's contracts."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.cli import main
from engine.face import geometry as geo
from engine.face.analysis import analyze_range
from engine.media.frame import planes_from_av
from engine.media.reader import VideoReader
from engine.models.store import ModelMissingError, import_model
from engine.stabilize import liveportrait as lp
from engine.stabilize.backend import Framing, create_stabilizer
from tests.conftest import shared_clip
from tests.generator_harness import edited_frames_change_only_in_mask
from tests.face_clip import write_face_clip
from tests.liveportrait_models import install, write_models
from tests.media_factory import decode_all
from tests.probe_models import wav2lip_probe

RANGE = (0.2, 0.8)


# One face analysis per clip serves every test of the module; each test has its own models.
pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("liveportrait-models"))


@pytest.fixture(scope="module")
def probe_models(tmp_path_factory):
    """The same networks with a stitcher that passes the driving keypoints through."""
    return write_models(tmp_path_factory.mktemp("liveportrait-probe"), stitch_identity=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_face_clip(tmp_path_factory.mktemp("liveportrait-clip") / "face.mp4", frames=20)


# --- keypoint maths --------------------------------------------------------------------------

def test_head_rotation_of_known_angles():
    x, y, z = np.eye(3)
    assert np.allclose(lp.headpose_matrix(90, 0, 0)[0] @ y, z)  # pitch: y turns to z
    assert np.allclose(lp.headpose_matrix(0, 90, 0)[0] @ x, -z)  # yaw: x turns to -z
    assert np.allclose(lp.headpose_matrix(0, 0, 90)[0] @ x, y)  # roll: x turns to y
    # Pitch first, then yaw, then roll: y -> z (pitch) -> x (yaw).
    assert np.allclose(lp.headpose_matrix(90, 90, 0)[0] @ y, x)
    r = lp.headpose_matrix([10.0, -25.0], [30.0, 5.0], [-15.0, 40.0])
    assert r.shape == (2, 3, 3)
    assert np.allclose(r @ r.transpose(0, 2, 1), np.eye(3)) and np.allclose(np.linalg.det(r), 1)


def test_angle_bins_give_the_softmax_expectation_in_degrees():
    logits = np.zeros((3, 66))
    logits[0, 40] = 50.0  # all the weight on bin 40: 40 * 3 - 97.5
    logits[2, [10, 20]] = 50.0  # half on each: bin 15
    assert np.allclose(lp.bins_to_degrees(logits), [22.5, 0.0, -52.5])
    # A motion extractor giving bins (the official network) reads as one giving degrees.
    rest = [np.ones((3, 1)), np.zeros((3, 3)), np.zeros((3, 21, 3)),
            np.random.default_rng(0).normal(size=(3, 21, 3))]
    degrees = lp.bins_to_degrees(logits)[:, None]
    assert np.allclose(lp.motion_keypoints([logits, logits[::-1], logits, *rest]),
                       lp.motion_keypoints([degrees, degrees[::-1], degrees, *rest]))


def test_keypoints_are_scaled_rotated_canonical_points_plus_expression_shifted_in_x_y():
    canonical = np.arange(63, dtype=float).reshape(1, 21, 3) / 100
    expression = np.full((1, 21, 3), 0.01)
    kp = lp.transform_keypoints(canonical, lp.headpose_matrix(0, 0, 0), expression,
                                np.array([2.0]), np.array([[1.0, 2.0, 3.0]]))
    assert np.allclose(kp, 2 * (canonical + expression) + (1.0, 2.0, 0.0))
    # A quarter turn of roll takes (a, b, c) to (-b, a, c) before scaling.
    kp = lp.transform_keypoints(canonical, lp.headpose_matrix(0, 0, 90), 0 * expression,
                                np.array([1.0]), np.zeros((1, 3)))
    assert np.allclose(kp[0, 5], (-canonical[0, 5, 1], canonical[0, 5, 0], canonical[0, 5, 2]))


def test_lip_ratio_on_known_landmarks():
    lm = np.zeros((2, 68, 2))
    lm[:, 48], lm[:, 54] = (-5, 1), (5, 1)  # mouth corners, 10 apart
    lm[0, 62], lm[0, 66] = (0, 0), (0, 3)  # inner lips 3 apart
    lm[1, 62] = lm[1, 66] = (0, 1)  # closed
    assert np.allclose(lp.lip_ratio(lm), [0.3, 0.0], atol=1e-6)
    assert np.allclose(lp.lip_ratio(lm * 7 + 40), [0.3, 0.0], atol=1e-6)  # any pixels


def test_stitching_offsets_move_each_keypoint_then_shift_x_y():
    driving = np.zeros((1, 21, 3))
    delta = np.zeros((1, 65))
    delta[0, 3 * 4 + 2] = 0.5  # keypoint 4's z
    delta[0, 63:] = (0.1, 0.2)
    out = lp.stitch(driving, delta)
    assert np.allclose(out[0, :, :2], (0.1, 0.2)) and out[0, 4, 2] == 0.5
    assert np.count_nonzero(out[..., 2]) == 1
    assert np.allclose(lp.retarget_lip(driving, np.ones((1, 63))), 1.0)


# --- the networks ----------------------------------------------------------------------------

def _faces(clip, indices=(3, 9)):
    """Square 256-pixel face crops of the clip and their landmarks in crop pixels."""
    analysis = analyze_range(clip)
    stabilizer = create_stabilizer("geometric")
    stabilizer.prepare(analysis)
    with VideoReader(clip) as reader:
        frames = [reader.frame(i) for i in indices]
    crops = stabilizer.crops(frames, list(indices), Framing((0.5, 0.5), 1.6, 256))
    landmarks = np.stack([geo.apply(c.transform, analysis.landmarks[k][None])[0]
                          for c, k in zip(crops, indices)])
    return np.stack([c.image for c in crops]), landmarks


def test_lip_retargeter_gets_the_ratio_and_its_offsets_reach_the_generator(
        probe_models, clip, monkeypatch):
    install(probe_models)
    model = lp.LivePortrait()
    feeds, outs = {}, {}

    def spy(role, run):
        def wrapped(feed):
            result = run(feed)
            feeds.setdefault(role, []).append(feed)
            outs.setdefault(role, []).append(result)
            return result
        return wrapped

    for role, session in model.sessions.items():
        monkeypatch.setattr(session, "run", spy(role, session.run))
    images, landmarks = _faces(clip)
    model.neutralise(images, landmarks, lip_ratio=0.1)

    def fed(role):
        return {k: np.concatenate([f[k] for f in feeds[role]]) for k in feeds[role][0]}

    def gave(role):
        return [np.concatenate(o) for o in zip(*outs[role])]

    # The face's own keypoints from the motion extractor's outputs, by our maths.
    pitch, yaw, roll, scale, t, exp, canonical = gave("motion_extractor")
    kp = lp.transform_keypoints(canonical, lp.headpose_matrix(pitch[:, 0], yaw[:, 0], roll[:, 0]),
                                exp, scale, t)
    lip = fed("lip_retargeter")["input"]
    assert lip.shape == (2, 65)
    assert np.allclose(lip[:, :63], kp.reshape(2, 63), atol=1e-6)
    assert np.allclose(lip[:, 63], lp.lip_ratio(landmarks), atol=1e-6)
    assert np.all(lip[:, 63] > 0.05) and np.all(lip[:, 64] == np.float32(0.1))
    delta = gave("lip_retargeter")[0]
    assert np.abs(delta).max() > 1e-3
    generator = fed("generator")
    assert np.allclose(generator["target"], kp, atol=1e-6)
    assert np.allclose(generator["source"], kp + delta.reshape(2, 21, 3), atol=1e-6)
    # The extractors see the aligned face at 256, RGB in [0, 1].
    face = fed("feature_extractor")["input"]
    assert face.shape == (2, 3, 256, 256) and 0 <= face.min() and face.max() <= 1
    # Skin: red above blue, in the pictures and in channel 0 versus 2 of what the networks see.
    assert images[..., 0].mean() > images[..., 2].mean() + 10
    assert face[:, 0].mean() > face[:, 2].mean() + 10 / 255
    assert np.array_equal(face, fed("motion_extractor")["input"])


def test_neutralise_changes_only_the_face_area(models, clip):
    install(models)
    images, landmarks = _faces(clip)
    out = lp.LivePortrait().neutralise(images, landmarks)
    assert out.shape == images.shape and out.dtype == np.uint8
    for before, after, lm in zip(images, out, landmarks):
        changed = np.any(before != after, axis=-1)
        hull = np.zeros(changed.shape, np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(lm).astype(np.int32)), 1)
        outside = cv2.dilate(hull, np.ones((3, 3), np.uint8)) == 0
        assert not changed[outside].any()
        inner = cv2.erode(hull, np.ones((25, 25), np.uint8)) > 0
        assert changed[inner].mean() > 0.9


def test_the_stabilizer_crops_as_the_geometric_one_with_the_face_re_rendered(models, clip):
    analysis = analyze_range(clip)
    stabilizer = create_stabilizer("liveportrait")
    with pytest.raises(ModelMissingError, match="live_portrait_"):
        stabilizer.prepare(analysis)
    install(models)
    stabilizer.prepare(analysis)
    geometric = create_stabilizer("geometric")
    geometric.prepare(analysis)
    framing = Framing(centre=(0.5, 0.66), side=0.88, size=96)
    with VideoReader(clip) as reader:
        frames = [reader.frame(i) for i in (4, 5)]
    got = stabilizer.crops(frames, [4, 5], framing)
    plain = geometric.crops(frames, [4, 5], framing)
    stabilizer.close()
    for g, p, k in zip(got, plain, (4, 5)):
        assert g.image.shape == (96, 96, 3)
        assert np.allclose(g.transform, p.transform)
        diff = np.abs(g.image.astype(int) - p.image).max(-1)
        lm = geo.apply(p.transform, analysis.landmarks[k][None])[0]
        mouth = lm[48:68].mean(0).astype(int)
        assert diff[mouth[1] - 3:mouth[1] + 4, mouth[0] - 3:mouth[0] + 4].mean() > 10
        # Outside the face (the landmark hull) the geometric crop's own pixels.
        hull = np.zeros(diff.shape, np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(lm).astype(np.int32)), 1)
        assert not diff[cv2.dilate(hull, np.ones((3, 3), np.uint8)) == 0].any()


@pytest.mark.parametrize("backend", ["wav2lip", "edtalk"])
def test_sync_on_liveportrait_faces_changes_only_pixels_in_the_mask(models, clip, tmp_path,
                                                                   backend):
    """A generator that hands back its reference picture shows the face it was given: the
    neutralised one (EDTalk aligns its own faces, and neutralises those)."""
    from tests.test_edtalk import _identity_model

    dub = shared_clip("speech_radio31_16k.wav")
    install(models)
    if backend == "wav2lip":
        import_model(wav2lip_probe(tmp_path / "ref.onnx", 3), "wav2lip_96")
    else:
        import_model(_identity_model(tmp_path / "identity.onnx"), "edtalk_256")
    outs = {}
    for name in ("geometric", "liveportrait"):
        out = outs[name] = tmp_path / f"{name}.mkv"
        assert main(["sync", str(clip), "--audio", str(dub), "--backend", backend,
                     "--stabilizer", name, "--range", f"{RANGE[0]}-{RANGE[1]}",
                     "--codec", "ffv1", "-o", str(out)]) == 0
    edited = edited_frames_change_only_in_mask(clip, outs["liveportrait"], RANGE, reach=9)
    assert len(edited) > 10
    frames = {name: [planes_from_av(f)[0] for f in decode_all(out)] for name, out in outs.items()}
    analysis = analyze_range(clip)
    for i in edited:
        # The mouth differs from the plain crop's: the neutralised face went through.
        x, y = analysis.landmarks[i][62].astype(int)
        lp_mouth = frames["liveportrait"][i][y - 3:y + 4, x - 3:x + 4].astype(int)
        plain_mouth = frames["geometric"][i][y - 3:y + 4, x - 3:x + 4].astype(int)
        assert np.abs(lp_mouth - plain_mouth).mean() > 5, f"frame {i}"


def test_a_pass_through_network_gives_the_face_back_in_place(tmp_path, clip):
    """Networks that carry the aligned face through unchanged: what comes back is the face
    where it was (at LivePortrait's resolution), so framing and paste-back agree."""
    folder = tmp_path / "pass"
    folder.mkdir()
    install(write_models(folder, pass_through=True))
    images, landmarks = _faces(clip)
    out = lp.LivePortrait().neutralise(images, landmarks)
    for before, after, lm in zip(images, out, landmarks):
        hull = np.zeros(before.shape[:2], np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(lm).astype(np.int32)), 1)
        inside = cv2.erode(hull, np.ones((9, 9), np.uint8)) > 0
        soft = [cv2.GaussianBlur(x, (0, 0), 1.5).astype(int) for x in (before, after)]
        assert np.abs(soft[1] - soft[0])[inside].mean() < 2
        # A face put back two pixels off would differ far more.
        moved = np.roll(soft[0], 2, axis=1)
        assert np.abs(soft[1] - moved)[inside].mean() > 3 * np.abs(soft[1] - soft[0])[inside].mean()
