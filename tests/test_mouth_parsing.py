"""The "mouth" mask kind: GPEN's ParseNet (the architecture the exporter loads
ParseNet-latest.pth into) and Video ReTalking's mouth region built from its parsing."""
from __future__ import annotations

import numpy as np
import pytest

from engine.mask import MOUTH_MARGIN, MaskOverride, MaskSettings, face_scale, frame_mask
from engine.models.store import import_model
from engine.mouth_parsing import MODEL_ID, SIZE, MouthParser, mouth_distance, mouth_mask

TINY = dict(in_size=64, out_size=64, min_feat_size=8, base_ch=4, res_depth=2, ch_range=(4, 8))


# -- the architecture ---------------------------------------------------------------------------

def test_parsenet_has_the_released_layout_and_loads_a_plain_state_dict_strictly(tmp_path):
    torch = pytest.importorskip("torch")
    from installer.parsenet_arch import ParseNet

    # The released network's size and key count (counted on GPEN's own code).
    with torch.device("meta"):  # shapes only: no time spent filling 21 M weights
        full = ParseNet().state_dict()
    assert len(full) == 238
    assert sum(v.numel() for k, v in full.items() if "running" not in k
               and "num_batches" not in k) == 21_303_254
    for key in ("encoder.0.conv2d.bias", "encoder.1.shortcut_func.conv2d.weight",
                "encoder.1.conv1.norm.norm.running_var", "body.9.conv2.norm.norm.weight",
                "decoder.3.conv1.conv2d.weight", "out_img_conv.conv2d.bias",
                "out_mask_conv.conv2d.weight"):
        assert key in full
    assert "body.0.conv1.conv2d.bias" not in full  # no bias before batch norm
    torch.manual_seed(0)
    net = ParseNet(**TINY).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # off identity, so a wrong order would show
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.normal_(m.bias, 0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "ParseNet-latest.pth"
    torch.save(net.state_dict(), path)  # the release is a plain state dict
    other = ParseNet(**TINY).eval()
    other.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        a, b = net(x), other(x)
        one = net(x[1:])
    assert a.shape == (2, 19, 64, 64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a[1:], one, rtol=1e-5, atol=1e-5)  # batch independent
    with pytest.raises(RuntimeError, match="Missing key"):
        bad = {k: v for k, v in net.state_dict().items() if not k.startswith("out_img_conv")}
        ParseNet(**TINY).load_state_dict(bad, strict=True)


def test_a_tiny_parsenet_export_runs_in_the_contract(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from installer.parsenet_arch import ParseNet
    from engine.models.manifest import get_entry
    from engine.models.session import check_contract, load_session

    torch.manual_seed(1)
    net = ParseNet(**{**TINY, "in_size": SIZE, "out_size": SIZE, "min_feat_size": 64}).eval()
    path = tmp_path / "parsenet.onnx"
    batch = torch.export.Dim("B", min=1, max=16)
    torch.onnx.export(net, (torch.rand(2, 3, SIZE, SIZE) * 2 - 1,), str(path), dynamo=True,
                      opset_version=18, input_names=["image"], output_names=["logits"],
                      dynamic_shapes={"image": {0: batch}}, external_data=False)
    session = load_session(path, "test")
    check_contract(session, get_entry(MODEL_ID).contract, path)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        reference = net(torch.from_numpy(x)).numpy()
    out = session.run(None, {"image": x})[0]
    assert out.shape == (3, 19, SIZE, SIZE)
    np.testing.assert_allclose(out, reference, atol=1e-4 * np.abs(reference).max())


# -- the mask from a parsing --------------------------------------------------------------------

def _labels() -> np.ndarray:
    """A 512 parsing: skin, a mouth (upper lip, inside, lower lip) centred at (256, 380)."""
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[120:470, 100:412] = 1  # skin
    labels[360:372, 200:312] = 11
    labels[372:388, 200:312] = 10
    labels[388:400, 200:312] = 12
    return labels


def _face(crop: tuple[int, int, int, int]) -> np.ndarray:
    """68 landmarks of a face in ``crop`` whose lips sit on the parsed mouth, but narrower
    (so the parsed mouth is what the mask follows)."""
    unit = (crop[2] - crop[0]) / SIZE
    lm = np.zeros((68, 2))
    lm[36:42] = (190, 200)
    lm[42:48] = (322, 200)
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    lm[48:60] = np.c_[256 + 30 * np.cos(t), 380 + 10 * np.sin(t)]
    lm[48], lm[54] = (226, 380), (286, 380)
    jaw = np.linspace(np.pi, 0, 17)
    lm[:17] = np.c_[256 + 150 * np.cos(jaw), 230 + 220 * np.sin(jaw)]  # chin at row 450
    lm[17:27] = np.c_[np.linspace(150, 362, 10), np.full(10, 170)]
    lm[27:31] = np.c_[np.full(4, 256), np.linspace(210, 300, 4)]
    lm[31:36] = np.c_[np.linspace(226, 286, 5), np.full(5, 320)]
    lm[60:] = lm[48:56]
    return crop[:2] + (lm + 0.5) * unit - 0.5


def test_the_mask_covers_the_parsed_mouth_and_feathers_out_inside_the_crop():
    crop = (300, 100, 556, 356)  # 256 px square: half a parsing pixel per frame pixel
    box = (380, 250, 560, 400)  # runs past the crop on the right and bottom
    settings = MaskSettings("mouth", dilation=-0.06, feather=0.12)
    landmarks = _face(crop)
    distance = mouth_distance(_labels(), crop, box)
    assert distance.shape == (150, 180) and distance.dtype == np.float32
    mask = mouth_mask(distance, landmarks, crop, box, settings)
    at = lambda x, y: mask[y - box[1], x - box[0]]  # noqa: E731
    # The whole parsed mouth (frame x 400..456, y 280..300), lip edges included, is replaced.
    mouth = (slice(280 - box[1], 300 - box[1]), slice(400 - box[0], 456 - box[0]))
    assert mask[mouth].min() == 1.0
    # Feathered: from 1 to 0 over the feather around it, smoothly, not in a step.
    scale = face_scale(landmarks)
    edge = 456 + (MOUTH_MARGIN - 0.06) * scale  # where the mask is 0.5, right of the mouth
    row = mask[290 - box[1]]
    ramp = row[456 - box[0]:int(edge + 0.06 * scale + 2) - box[0]]
    assert ramp[0] == 1.0 and ramp[-1] == 0.0 and np.all(np.diff(ramp) <= 0)
    assert ((ramp > 0.02) & (ramp < 0.98)).sum() >= 0.1 * scale
    assert at(int(round(edge)), 290) == pytest.approx(0.5, abs=0.06)
    # The skin above (the nose's side) and the chin below stay the source's.
    assert at(428, 255) == 0 and at(428, 340) == 0
    # Nothing outside the crop, though the box runs past it.
    assert not mask[:, 556 - box[0]:].any() and not mask[356 - box[1]:].any()
    # The user's dilation and feather act on it as on a landmark mask.
    wider = mouth_mask(distance, landmarks, crop, box, MaskSettings("mouth", 0.04, 0.12))
    assert (wider >= mask).all() and wider.sum() > 1.2 * mask.sum()


def test_the_target_lips_are_covered_too_and_stand_alone_without_a_parsed_mouth():
    crop = (0, 0, 512, 512)
    box = (100, 250, 420, 480)
    landmarks = _face(crop)
    landmarks[48:60, 1] += 40  # the old mouth lies lower than the new one
    settings = MaskSettings("mouth", dilation=-0.06, feather=0.12)
    mask = mouth_mask(mouth_distance(_labels(), crop, box), landmarks, crop, box, settings)
    assert mask[380 - box[1], 256 - box[0]] == 1.0  # the parsed (new) mouth
    assert mask[420 - box[1], 256 - box[0]] == 1.0  # the old lips below it
    empty = np.ones((SIZE, SIZE), np.uint8)
    assert mouth_distance(empty, crop, box) is None
    alone = mouth_mask(None, landmarks, crop, box, settings)
    assert alone[420 - box[1], 256 - box[0]] == 1.0 and alone[380 - box[1], 256 - box[0]] < 1


def test_an_exclusion_drawn_by_the_user_is_kept_whatever_the_parsing():
    crop = (0, 0, 512, 512)
    box = (100, 250, 420, 480)
    landmarks = _face(crop)
    settings = MaskSettings("mouth", dilation=-0.06, feather=0.12)
    base = mouth_mask(mouth_distance(_labels(), crop, box), landmarks, crop, box, settings)
    to_face = np.array([[1.0, 0, 0], [0, 1.0, 0]])  # face coordinates = frame pixels
    hand = MaskOverride(np.array([[190, 350], [260, 350], [260, 420], [190, 420]]), "exclude")
    mask = frame_mask(landmarks, box, to_face, settings, [hand], base=base)
    assert not mask[350 - box[1]:420 - box[1], 190 - box[0]:260 - box[0]].any()
    assert mask[380 - box[1], 290 - box[0]] > 0.99  # the rest of the mouth still replaced
    np.testing.assert_array_equal(frame_mask(landmarks, box, to_face, settings, (), base=base)
                                  [:, 300 - box[0]:], mask[:, 300 - box[0]:])


# -- the parser on a picture --------------------------------------------------------------------

class _FakeSession:
    """Answers every picture with ``labels`` as logits and keeps what it was given."""

    def __init__(self, labels: np.ndarray) -> None:
        self.inputs = [type("Input", (), {"name": "image"})()]
        self.labels, self.fed = labels, []

    def run(self, feeds: dict) -> list[np.ndarray]:
        x = feeds["image"]
        self.fed.append(x)
        logits = np.eye(19, dtype=np.float32)[self.labels].transpose(2, 0, 1)[None]
        return [np.repeat(logits, len(x), 0)]


def test_the_parser_sees_the_crop_with_the_generated_picture_in_rgb(monkeypatch):
    import engine.mouth_parsing as mp
    from engine.lipsync.backend import Generated
    from engine.media.frame import Frame

    fake = _FakeSession(_labels())
    monkeypatch.setattr(mp, "model_path", lambda model_id: model_id)
    monkeypatch.setattr(mp, "session_for", lambda path, what, providers=None: fake)
    rgb = np.zeros((300, 400, 3), np.uint8)
    rgb[..., 0] = 200  # a red frame
    frame = Frame(0, 0.0, 0, "rgb24", 400, 300, (rgb,))
    box = (150, 150, 250, 250)
    gen = Generated(box=box, image=np.full((100, 100, 3), (0, 0, 255), np.uint8),
                    landmarks=np.zeros((68, 2)))
    parser = MouthParser()
    crop = (100, 50, 356, 306)  # its bottom lies past the frame: black there
    distance = parser.distance(frame, gen, crop)
    (x,) = fake.fed
    assert x.shape == (1, 3, SIZE, SIZE) and x.dtype == np.float32
    # RGB in [-1, 1]: red frame, the generated picture blue, black past the frame.
    assert x[0, :, 20, 20] == pytest.approx([200 / 127.5 - 1, -1, -1], abs=1e-6)
    assert x[0, :, 300, 200] == pytest.approx([-1, -1, 1], abs=1e-6)
    assert x[0, :, 505, 20] == pytest.approx([-1, -1, -1], abs=1e-6)
    np.testing.assert_array_equal(distance, mouth_distance(_labels(), crop, box))
    parser.close()


# -- the kind in the pipeline, the command line and the project --------------------------------

def test_mouth_is_a_mask_kind_that_needs_parsenet(tmp_path):
    from engine.errors import UsageError
    from engine.mask import landmark_polygon
    from engine.pipeline import SyncSettings, _region, required_models
    from engine.project import MediaRef, Project, RangeSettings, SyncRange

    assert MODEL_ID in required_models(SyncSettings(mask=MaskSettings(kind="mouth")))
    for kind in ("lower_face", "lips", "parsing"):
        assert MODEL_ID not in required_models(SyncSettings(mask=MaskSettings(kind=kind)))
    with pytest.raises(UsageError, match="parsing, mouth"):
        MaskSettings(kind="teeth")
    lm = np.random.default_rng(0).random((68, 2)) * 100
    np.testing.assert_array_equal(landmark_polygon(lm, "mouth"), landmark_polygon(lm, "lips"))
    # The editor outlines the lips, but the blend region leaves a new mouth room to open
    # down to the chin: the lower face's.
    frame = type("Frame", (), {"width": 640, "height": 480})()
    face = _face((100, 50, 612, 562))
    crop = np.array([100, 50, 612, 562])
    region = lambda kind: _region(face, crop, frame, SyncSettings(  # noqa: E731
        mask=MaskSettings(kind, -0.06, 0.12)))
    assert region("mouth") == region("lower_face") != region("lips")
    path = tmp_path / "p.redub"
    Project(MediaRef("/clip.mp4"),
            ranges=[SyncRange(1.0, 2.0, RangeSettings(mask_kind="mouth"))]).save(path)
    assert Project.load(path).ranges[0].settings.to_sync_settings().mask.kind == "mouth"


def test_the_inspector_offers_the_mouth_mask():
    pytest.importorskip("PySide6")
    from desktop.inspector import LABELS, MASK_KINDS

    assert "mouth" in MASK_KINDS and LABELS["mouth"] == "Face parsing (mouth)"


def test_sync_with_the_mouth_mask_changes_only_the_mouth(fresh_models, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    from engine.media.frame import planes_from_av
    from engine.pipeline import SyncSettings, sync
    from engine.render import ExportSettings
    from tests.conftest import shared_clip
    from tests.face_clip import write_face_clip
    from tests.media_factory import decode_all
    from tests.probe_models import wav2lip_probe
    from tests.test_face_parsing import _map_parser

    monkeypatch.setenv("REDUB_CACHE_DIR", str(tmp_path / "cache"))
    clip = write_face_clip(tmp_path / "face.mp4", frames=12)
    dub = shared_clip("speech_radio31_16k.wav")
    # Every crop parses as a mouth low in the middle (rows 44..49, columns 26..37 of 64).
    labels64 = np.ones((64, 64), np.int64)
    labels64[44:46, 26:38], labels64[46:48, 26:38], labels64[48:50, 26:38] = 11, 10, 12
    import_model(_map_parser(fresh_models / "map.onnx", labels64), MODEL_ID)
    # A generator whose lower half of the face is black: every masked pixel there changes.
    import_model(wav2lip_probe(fresh_models / "masked.onnx", 0), "wav2lip_96")
    out = tmp_path / "synced.mkv"
    span = (0.1, 0.4)
    settings = SyncSettings(backend="wav2lip", mask=MaskSettings("mouth", -0.06, 0.12))
    sessions = []
    sync(clip, dub, ExportSettings(output=str(out), codec="ffv1"), ranges=[span],
         settings=settings, prepared=sessions.append)
    analysis = sessions[0].analysis
    labels = np.repeat(np.repeat(labels64, 8, 0), 8, 1)
    edited = 0
    for i, (s, o) in enumerate(zip(decode_all(clip), decode_all(out))):
        diff = planes_from_av(s)[0] != planes_from_av(o)[0]
        if not span[0] <= analysis.times[i] < span[1]:
            assert not diff.any()
            continue
        edited += 1
        x0, y0, x1, _ = (int(round(v)) for v in analysis.crop_boxes[i])
        crop = (x0, y0, x1, y0 + x1 - x0)
        full = (0, 0, diff.shape[1], diff.shape[0])
        mask = mouth_mask(mouth_distance(labels, crop, full), analysis.landmarks[i], crop, full,
                          settings.mask)
        assert diff.any() and not (diff & (mask == 0)).any()
        inside = np.zeros_like(diff)
        inside[crop[1]:crop[3], crop[0]:crop[2]] = True
        assert not (diff & ~inside).any()
        unit = (crop[2] - crop[0]) / 64  # the parsed mouth's centre changed
        assert diff[int(crop[1] + 47 * unit), int(crop[0] + 32 * unit)]
    assert edited >= 7
