"""The stabilizer stage: pose-normalised crops, the neural slot, and its use by `redub sync`."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from engine.cli import main
from engine.errors import UsageError
from engine.face import geometry as geo
from engine.face.analysis import analyze_range
from engine.face.pixels import warp
from engine.media.frame import Frame
from engine.media.reader import VideoReader
from engine.models.store import ModelMissingError, import_model
from engine.stabilize.backend import Framing, create_stabilizer
from tests.conftest import shared_clip
from tests.face_clip import write_face_clip
from tests.media_factory import decode_all
from tests.probe_models import inverting_neutralizer, wav2lip_probe

FRAMING = Framing(centre=(0.5, 0.66), side=0.88, size=96)


# One face analysis per clip serves every test of the module; each test has its own models.
pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_face_clip(tmp_path_factory.mktemp("stabilize-clip") / "face.mp4", frames=30)


def _frame(rgb: np.ndarray, index: int = 0) -> Frame:
    h, w = rgb.shape[:2]
    return Frame(index, 0.0, 0, "rgb24", w, h, (np.ascontiguousarray(rgb),))


def _geometric(transforms: np.ndarray):
    stabilizer = create_stabilizer("geometric")
    stabilizer.prepare(SimpleNamespace(transforms=np.asarray(transforms)))
    return stabilizer


def test_framing_places_the_canonical_face():
    to_canon = geo.fit_similarity(geo.TEMPLATE_68 * 150 + (40, 25), geo.TEMPLATE_68)
    m = FRAMING.matrix(to_canon)
    corners = geo.apply(m, (geo.TEMPLATE_68 * 150 + (40, 25))[None])[0]
    expected = (geo.TEMPLATE_68 - (0.5 - 0.44, 0.66 - 0.44)) * (96 / 0.88)
    assert np.allclose(corners, expected, atol=1e-6)
    assert np.allclose(FRAMING.with_size(192).matrix(to_canon), 2 * m)


def test_turned_and_scaled_faces_give_the_same_crop(clip):
    analysis = analyze_range(clip)
    k = 12
    with VideoReader(clip) as reader:
        rgb = reader.frame(k).rgb()
    h, w = rgb.shape[:2]
    # The same picture turned by 25 degrees and shrunk, as if the head had rolled and moved.
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 25, 0.8)
    turned = cv2.warpAffine(rgb, turn, (w, h), flags=cv2.INTER_CUBIC)
    t = analysis.transforms[k].astype(np.float64)
    t_turned = np.hstack([t[:, :2] @ geo.invert(turn)[:, :2],
                          (t[:, :2] @ geo.invert(turn)[:, 2] + t[:, 2])[:, None]])
    stabilizer = _geometric([t, t_turned])
    a, b = stabilizer.crops([_frame(rgb), _frame(turned)], [0, 1], FRAMING)
    assert a.image.shape == (96, 96, 3) and a.image.dtype == np.uint8
    assert np.abs(a.image.astype(int) - b.image).mean() < 4
    unturned = _geometric([t, t]).crops([_frame(turned)], [1], FRAMING)[0]
    assert np.abs(a.image.astype(int) - unturned.image).mean() > 20
    # The transform maps the face's eyes onto one row: the roll is gone.
    eyes = geo.apply(a.transform, geo.five_points(analysis.landmarks[k])[None, :2])[0]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1.5


def test_crops_read_only_the_face_region_yet_equal_a_whole_frame_warp(clip):
    analysis = analyze_range(clip)
    with VideoReader(clip) as reader:
        frame = reader.frame(5)
    for framing in (FRAMING.with_size(256), FRAMING):
        crop = _geometric(analysis.transforms).crops([frame], [5], framing)[0]
        whole = warp(frame.rgb(), crop.transform, framing.size)
        # The same samples (up to OpenCV's fixed-point rounding; a shrunken region's area
        # averaging starts at a different pixel).
        tolerance = 1 if framing.size == 256 else 2
        assert np.abs(crop.image.astype(int) - whole).max() <= tolerance


def test_neural_stabilizer_runs_the_manifest_model_on_the_geometric_crop(clip, tmp_path):
    analysis = analyze_range(clip)
    with pytest.raises(UsageError, match="geometric, liveportrait, neural"):
        create_stabilizer("wobbly")
    neural = create_stabilizer("neural")
    with pytest.raises(ModelMissingError, match="expression_neutralizer.*import"):
        neural.prepare(analysis)
    import_model(inverting_neutralizer(tmp_path / "neg.onnx"), "expression_neutralizer")
    neural.prepare(analysis)
    geometric = _geometric(analysis.transforms)
    with VideoReader(clip) as reader:
        frames = [reader.frame(i) for i in (3, 4, 5)]
    got = neural.crops(frames, [3, 4, 5], FRAMING)
    plain = geometric.crops(frames, [3, 4, 5], FRAMING)
    neural.close()
    for n, p, frame, k in zip(got, plain, frames, (3, 4, 5)):
        assert n.image.shape == (96, 96, 3)
        # The model's negative, sampled at its 256 pixels and reduced: the negative of the frame
        # seen through the crop's transform (reduction smooths a little more than sampling at
        # 96 directly, hence the blur before comparing).
        negative = cv2.GaussianBlur(255 - n.image, (5, 5), 1.0).astype(int)
        seen = cv2.GaussianBlur(warp(frame.rgb(), n.transform, 96), (5, 5), 1.0)
        assert np.abs(negative - seen).mean() < 2
        points = analysis.landmarks[k][None]
        assert np.abs(geo.apply(n.transform, points) - geo.apply(p.transform, points)).max() < 0.5


def test_sync_takes_wav2lip_crops_from_the_chosen_stabilizer(clip, tmp_path):
    dub = shared_clip("speech_radio31_16k.wav")
    # A generator that hands back its reference picture, and a neutraliser that inverts it.
    import_model(wav2lip_probe(tmp_path / "ref.onnx", 3), "wav2lip_96")
    import_model(inverting_neutralizer(tmp_path / "neg.onnx"), "expression_neutralizer")
    change = {}
    src = [f.to_ndarray(format="rgb24").astype(int) for f in decode_all(clip)]
    analysis = analyze_range(clip)
    for name in ("geometric", "neural"):
        out = tmp_path / f"{name}.mkv"
        assert main(["sync", str(clip), "--audio", str(dub), "--backend", "wav2lip",
                     "--stabilizer", name, "--range", "0.2-1.0", "--codec", "ffv1",
                     "-o", str(out)]) == 0
        outs = [f.to_ndarray(format="rgb24") for f in decode_all(out)]
        # Mean change in a 7x7 patch at the centre of the mouth, over the edited frames.
        mouths = [(i, *analysis.landmarks[i][62].astype(int)) for i in range(5, 25)]
        change[name] = np.mean([np.abs(outs[i][y - 3:y + 4, x - 3:x + 4] -
                                       src[i][y - 3:y + 4, x - 3:x + 4]).mean()
                                for i, x, y in mouths])
    # The face comes back (blurred to 96 pixels) through one, its negative through the other.
    assert change["geometric"] < 15 and change["neural"] > 5 * change["geometric"]
