"""Face parsing: the BiSeNet architecture the exporter loads 79999_iter.pth into, and the
MuseTalk v1.5 "jaw" mask built from the parsing."""
from __future__ import annotations

import numpy as np
import pytest

from engine.face_parsing import (MEAN, MODEL_ID, NOSE, SKIN, STD, FaceParser, blend_mask,
                                 crop_box, jaw_mask, pil_resize)
from engine.models.store import import_model

HAIR, NECK = 17, 14

# The official checkpoint's layout, read from the MuseTalk face-parsing code: every convolution
# (bias-free) with its weight shape, every batch norm with its channels.
OFFICIAL_CONVS = {
    "cp.resnet.conv1": (64, 3, 7, 7),
    **{f"cp.resnet.layer1.{b}.conv{c}": (64, 64, 3, 3) for b in (0, 1) for c in (1, 2)},
    **{f"cp.resnet.layer{i}.0.conv1": (n, n // 2, 3, 3)
       for i, n in ((2, 128), (3, 256), (4, 512))},
    **{f"cp.resnet.layer{i}.0.downsample.0": (n, n // 2, 1, 1)
       for i, n in ((2, 128), (3, 256), (4, 512))},
    **{f"cp.resnet.layer{i}.{b}.conv{c}": (n, n, 3, 3)
       for i, n in ((2, 128), (3, 256), (4, 512)) for b, c in ((0, 2), (1, 1), (1, 2))},
    "cp.arm16.conv.conv": (128, 256, 3, 3), "cp.arm16.conv_atten": (128, 128, 1, 1),
    "cp.arm32.conv.conv": (128, 512, 3, 3), "cp.arm32.conv_atten": (128, 128, 1, 1),
    "cp.conv_head32.conv": (128, 128, 3, 3), "cp.conv_head16.conv": (128, 128, 3, 3),
    "cp.conv_avg.conv": (128, 512, 1, 1),
    "ffm.convblk.conv": (256, 256, 1, 1), "ffm.conv1": (64, 256, 1, 1),
    "ffm.conv2": (256, 64, 1, 1),
    "conv_out.conv.conv": (256, 256, 3, 3), "conv_out.conv_out": (19, 256, 1, 1),
    "conv_out16.conv.conv": (64, 128, 3, 3), "conv_out16.conv_out": (19, 64, 1, 1),
    "conv_out32.conv.conv": (64, 128, 3, 3), "conv_out32.conv_out": (19, 64, 1, 1),
}
OFFICIAL_BATCH_NORMS = {
    "cp.resnet.bn1": 64,
    **{f"cp.resnet.layer1.{b}.bn{c}": 64 for b in (0, 1) for c in (1, 2)},
    **{f"cp.resnet.layer{i}.{b}.bn{c}": n for i, n in ((2, 128), (3, 256), (4, 512))
       for b in (0, 1) for c in (1, 2)},
    **{f"cp.resnet.layer{i}.0.downsample.1": n for i, n in ((2, 128), (3, 256), (4, 512))},
    "cp.arm16.conv.bn": 128, "cp.arm16.bn_atten": 128, "cp.arm32.conv.bn": 128,
    "cp.arm32.bn_atten": 128, "cp.conv_head32.bn": 128, "cp.conv_head16.bn": 128,
    "cp.conv_avg.bn": 128, "ffm.convblk.bn": 256, "conv_out.conv.bn": 256,
    "conv_out16.conv.bn": 64, "conv_out32.conv.bn": 64,
}


def _official_state(torch) -> dict:
    """A state dict in the 79999_iter.pth layout with random values."""
    gen = torch.Generator().manual_seed(0)
    state = {f"{k}.weight": torch.randn(shape, generator=gen) * 0.05
             for k, shape in OFFICIAL_CONVS.items()}
    for k, n in OFFICIAL_BATCH_NORMS.items():
        state[f"{k}.weight"] = 1 + 0.1 * torch.rand(n, generator=gen)
        state[f"{k}.bias"] = 0.1 * torch.randn(n, generator=gen)
        state[f"{k}.running_mean"] = 0.1 * torch.randn(n, generator=gen)
        state[f"{k}.running_var"] = 1 + 0.1 * torch.rand(n, generator=gen)
        state[f"{k}.num_batches_tracked"] = torch.tensor(79999)
    return state


def test_bisenet_loads_the_official_layout_strictly(tmp_path):
    torch = pytest.importorskip("torch")
    from installer.bisenet_arch import BiSeNet

    assert len(OFFICIAL_CONVS) == 36 and len(OFFICIAL_BATCH_NORMS) == 31
    checkpoint = tmp_path / "79999_iter.pth"
    torch.save(_official_state(torch), checkpoint)
    net = BiSeNet(n_classes=19).eval()
    net.load_state_dict(torch.load(checkpoint, weights_only=True), strict=True)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(13.3e6, rel=0.01)
    with torch.no_grad():
        outputs = net(torch.randn(1, 3, 128, 96))
    assert [tuple(o.shape) for o in outputs] == [(1, 19, 128, 96)] * 3
    assert all(torch.isfinite(o).all() for o in outputs)


# -- the "jaw" rules on known parsing maps ------------------------------------------------------

def _labels(*regions: tuple[int, slice, slice]) -> np.ndarray:
    labels = np.zeros((512, 512), np.uint8)
    for cls, rows, cols in regions:
        labels[rows, cols] = cls
    return labels


def test_skin_grows_up_and_sideways_and_a_little_down_in_a_point():
    mask = jaw_mask(_labels((SKIN, slice(200, 300), slice(200, 312)))) > 0
    rows, cols = np.nonzero(mask)
    # Up 16 rows, 10 columns to each side, 6 rows down (the cone kernel, anchored at its centre).
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (184, 305, 190, 321)
    assert mask[184, 190:322].all() and mask[250, 190:322].all()
    # Below the skin the growth narrows to a point: a flat edge moves down 6 rows, no wider.
    assert mask[305, 200:312].all() and not mask[305, 199] and not mask[305, 312]
    assert mask[304, 199] and mask[304, 312]
    assert not mask[306].any()


def test_cheeks_are_thinned_sideways_and_the_middle_is_not():
    mask = jaw_mask(_labels((SKIN, slice(200, 300), slice(60, 452)))) > 0
    # Columns up to 166 and from 346 are cheeks: the grown edge (50, 461) comes in by two
    # erosions of a 35x3 ellipse (17 columns each), and the top and bottom by one row each.
    assert np.flatnonzero(mask[250])[[0, -1]].tolist() == [84, 427]
    assert np.flatnonzero(mask[:, 166])[[0, -1]].tolist() == [186, 303]
    assert np.flatnonzero(mask[:, 167])[[0, -1]].tolist() == [184, 305]
    assert np.flatnonzero(mask[:, 346])[[0, -1]].tolist() == [186, 303]
    assert np.flatnonzero(mask[:, 345])[[0, -1]].tolist() == [184, 305]


def test_nose_is_left_out_and_lips_and_mouth_come_in_whatever_the_skin():
    labels = _labels((SKIN, slice(150, 350), slice(150, 362)),
                     (NOSE, slice(200, 260), slice(230, 282)),
                     (HAIR, slice(140, 150), slice(150, 362)),  # above the skin: grown over
                     (12, slice(300, 310), slice(220, 292)), (13, slice(310, 320), slice(220, 292)),
                     (NECK, slice(420, 512), slice(0, 512)),
                     (11, slice(470, 480), slice(10, 30)))  # mouth far from any skin
    mask = jaw_mask(labels) > 0
    assert not mask[200:260, 230:282].any()  # the nose, inside grown skin
    assert mask[260, 230:282].all()  # the skin right under it
    assert mask[140:150, 180:330].all()  # hair the skin grew over (between the cheeks)
    assert mask[300:320, 220:292].all() and mask[470:480, 10:30].all()
    assert not mask[420:470].any()  # the neck stays out
    assert not mask[:130].any()


def test_blend_mask_matches_the_reference_geometry_in_any_box():
    labels = _labels((SKIN, slice(150, 470), slice(120, 392)),
                     (NOSE, slice(240, 330), slice(226, 286)))
    face = (200, 100, 400, 340)  # 200 x 240: crop half side 180, crop (120, 40, 480, 400)
    (cx0, cy0, cx1, cy1), s = crop_box(face)
    assert (cx0, cy0, cx1, cy1, s) == (120, 40, 480, 400, 180)
    whole = blend_mask(labels, face, (0, 0, 600, 500))
    assert whole.dtype == np.float32 and whole.min() >= 0 and whole.max() <= 1
    # Nothing above the crop's middle row (220) bar the blur (kernel 19: 9 pixels), nothing
    # left or right of the face box or below it beyond the blur.
    ys, xs = np.nonzero(whole > 0)
    assert ys.min() == 220 - 9 and ys.max() <= 340 + 9
    assert xs.min() >= 200 - 9 and xs.max() <= 400 + 9
    # Whole on the skin under the nose, between the cheeks' thinned edges (frame columns
    # 221 and 378) and above the face box's bottom.
    assert whole[285:325, 235:365].min() > 0.99
    # The nose (labels rows 240..330, columns 226..286: frame rows 209..272, columns 279..321
    # at the crop's 360/512 scale) is out below the middle row, bar its blurred edge.
    assert whole[225:262, 289:312].max() < 0.05
    # The same mask in another box: its pixels, shifted, and zeros where it does not reach.
    part = blend_mask(labels, face, (250, 230, 450, 360))
    np.testing.assert_array_equal(part[:, :150], whole[230:360, 250:400])
    assert not part[:, 160:].any()


def test_pil_resize_is_pillows_to_the_byte():
    image_mod = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (301, 301, 3), dtype=np.uint8)
    ref = np.asarray(image_mod.fromarray(picture).resize((512, 512), image_mod.BILINEAR))
    np.testing.assert_array_equal(pil_resize(picture, 512, 512, "bilinear"), ref)
    big = rng.integers(0, 256, (977, 977, 3), dtype=np.uint8)
    ref = np.asarray(image_mod.fromarray(big).resize((512, 512), image_mod.BILINEAR))
    np.testing.assert_array_equal(pil_resize(big, 512, 512, "bilinear"), ref)
    mask = jaw_mask(_labels((SKIN, slice(100, 400), slice(80, 430)), (NOSE, slice(200, 260),
                                                                         slice(230, 282))))
    for side in (300, 777):
        ref = np.asarray(image_mod.fromarray(mask).resize((side, side)))  # default: bicubic
        np.testing.assert_array_equal(pil_resize(mask, side, side, "bicubic"), ref)


# -- the model ----------------------------------------------------------------------------------

# Colours a nearest-colour "parser" tells apart (class -> RGB).
COLOURS = {0: (0, 0, 0), SKIN: (210, 160, 130), NOSE: (60, 120, 220), 12: (200, 30, 60),
           HAIR: (40, 200, 40)}


def _colour_parser(path):
    """A face_parsing_bisenet-shaped ONNX model: a 1x1 convolution whose argmax is the class
    whose colour (after the ImageNet normalisation) is nearest; other classes never win."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((19, 3, 1, 1), np.float32)
    bias = np.full(19, -1e4, np.float32)
    for cls, rgb in COLOURS.items():
        centre = (np.array(rgb, np.float32) / 255 - MEAN) / STD
        weight[cls, :, 0, 0] = 2 * centre
        bias[cls] = -float(centre @ centre)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["logits"])], "colour_parser",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 3, 512, 512])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 19, 512, 512])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    return _save(graph, path)


def _map_parser(path, labels64: np.ndarray):
    """A face_parsing_bisenet-shaped ONNX model that parses every picture as ``labels64``
    (64x64 classes, each an 8x8 block at 512), whatever it shows."""
    from onnx import TensorProto, helper, numpy_helper

    logits = (np.eye(19, dtype=np.float32)[labels64].transpose(2, 0, 1) * 10)[None]
    nodes = [helper.make_node("Resize", ["map", "", "scales"], ["big"], mode="nearest"),
             helper.make_node("ReduceMean", ["image"], ["level"], keepdims=1),
             helper.make_node("Mul", ["level", "zero"], ["nothing"]),
             helper.make_node("Add", ["big", "nothing"], ["logits"])]
    graph = helper.make_graph(
        nodes, "map_parser",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 3, 512, 512])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 19, 512, 512])],
        [numpy_helper.from_array(logits, "map"),
         numpy_helper.from_array(np.array([1, 1, 8, 8], np.float32), "scales"),
         numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    return _save(graph, path)


def _save(graph, path):
    onnx = pytest.importorskip("onnx")
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_parser_feeds_the_normalised_rgb_crop_and_builds_the_mask_from_it(fresh_models):
    pytest.importorskip("onnx")
    import_model(_colour_parser(fresh_models / "colour.onnx"), MODEL_ID)
    frame = np.zeros((360, 480, 3), np.uint8)
    frame[:] = COLOURS[HAIR]
    frame[120:340, 310:450] = COLOURS[SKIN]
    frame[190:260, 360:400] = COLOURS[NOSE]
    frame[275:290, 350:410] = COLOURS[12]
    face = (300, 110, 460, 300)
    (cx0, cy0, cx1, cy1), s = crop_box(face)
    assert (cx0, cy0, cx1, cy1) == (238, 63, 522, 347)  # its right part lies past the frame
    parser = FaceParser()
    try:
        box = (240, 100, 480, 360)
        mask = parser.mask_from(lambda x0, y0, x1, y1: frame[y0:y1, x0:x1], 480, 360, face, box)
        # What it must have parsed: the crop, black past the frame, resized as PIL does, each
        # pixel's nearest colour (the colours as RGB: swapped channels would parse otherwise).
        crop = np.zeros((2 * s, 2 * s, 3), np.uint8)
        crop[:, :480 - cx0] = frame[cy0:cy1, cx0:]
        small = pil_resize(crop, 512, 512, "bilinear")
        classes = np.array(list(COLOURS))
        rgb = np.array([COLOURS[c] for c in classes], np.float32)
        nearest = ((small.astype(np.float32)[:, :, None] - rgb) ** 2).sum(-1).argmin(-1)
        expected = classes[nearest].astype(np.uint8)
        labels = parser.labels(small[None])[0]
        np.testing.assert_array_equal(labels, expected)
        assert (labels[:, 440:] == 0).all()  # past the frame: black
        np.testing.assert_allclose(mask, blend_mask(expected, face, box), atol=1e-6)
    finally:
        parser.close()
    # In the frame (blur radius 7): the lips and the skin below the crop's middle row (205)
    # inside the face box are in; rows above it, the hair left of the face box and the nose
    # are out.
    at = lambda x, y: mask[y - box[1], x - box[0]]  # noqa: E731
    assert at(380, 282) > 0.99 and at(415, 240) > 0.99
    assert not mask[:197 - box[1]].any()
    assert not mask[:, :293 - box[0]].any()
    assert at(380, 230) < 0.05


def test_a_random_bisenet_export_runs_in_the_contract(fresh_models):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from installer.bisenet_arch import BiSeNet
    from engine.models.manifest import get_entry
    from engine.models.session import check_contract, load_session

    torch.manual_seed(0)
    net = BiSeNet().eval()

    class Main(torch.nn.Module):  # the exporter's choice: the first output only
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, image):
            return self.net(image)[0]

    path = fresh_models / "bisenet.onnx"
    torch.onnx.export(Main().eval(), torch.zeros(1, 3, 512, 512), str(path), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "B"}, "logits": {0: "B"}},
                      opset_version=17, dynamo=False)
    check_contract(load_session(path, "test"), get_entry(MODEL_ID).contract, path)
    import_model(path, MODEL_ID)
    rng = np.random.default_rng(1)
    pictures = rng.integers(0, 256, (2, 512, 512, 3), dtype=np.uint8)
    parser = FaceParser()
    try:
        labels = parser.labels(pictures)
        x = torch.from_numpy(((pictures / 255.0 - MEAN) / STD).astype(np.float32))
        with torch.no_grad():
            reference = net(x.permute(0, 3, 1, 2))[0].argmax(1).numpy()
        assert labels.shape == (2, 512, 512) and labels.dtype == np.uint8
        assert (labels == reference).mean() > 0.999
        mask = parser.mask_from(lambda x0, y0, x1, y1: pictures[0][y0:y1, x0:x1], 512, 512,
                                (150, 120, 350, 400), (100, 100, 400, 450))
        assert mask.shape == (350, 300) and 0 <= mask.min() and mask.max() <= 1
    finally:
        parser.close()


# -- the "parsing" mask kind in the pipeline ----------------------------------------------------

def test_parsing_is_a_mask_kind_of_ranges_and_needs_the_parser_model(tmp_path):
    from engine.errors import UsageError
    from engine.mask import MaskSettings, landmark_polygon
    from engine.pipeline import SyncSettings, required_models
    from engine.project import MediaRef, Project, RangeSettings, SyncRange

    assert MaskSettings(kind="parsing").kind == "parsing"
    with pytest.raises(UsageError, match="lower_face, lips, parsing"):
        MaskSettings(kind="jaw")
    assert MODEL_ID in required_models(SyncSettings(mask=MaskSettings(kind="parsing")))
    assert MODEL_ID not in required_models(SyncSettings())
    # Where an outline stands for it (the editor, the blend region): the lower face's.
    lm = np.random.default_rng(0).random((68, 2)) * 100
    np.testing.assert_array_equal(landmark_polygon(lm, "parsing"),
                                  landmark_polygon(lm, "lower_face"))
    path = tmp_path / "p.redub"
    Project(MediaRef("/clip.mp4"),
            ranges=[SyncRange(1.0, 2.0, RangeSettings(mask_kind="parsing"))]).save(path)
    settings = Project.load(path).ranges[0].settings
    assert settings.mask_kind == "parsing"
    assert settings.to_sync_settings().mask.kind == "parsing"


@pytest.mark.parametrize("kind, model", [("parsing", MODEL_ID),
                                         ("mouth", "face_parsing_parsenet")])
def test_sync_command_takes_the_mask_kind_and_asks_for_the_parser(tmp_path, capsys, kind, model):
    from engine.cli import main
    from tests.media_factory import make_video, write_tone_wav

    video = make_video(tmp_path / "v.mp4", frames=10, size=(64, 48))
    dub = write_tone_wav(tmp_path / "d.wav", 1.0)
    code = main(["sync", str(video), "--audio", str(dub), "--mask", kind, "--offline",
                 "-o", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and model in err[0]  # offline: which file is missing
    assert not (tmp_path / "out.mp4").exists()


def _face_map() -> np.ndarray:
    """A 64x64 parsing of MuseTalk's crop: skin, a nose reaching below the crop's middle row,
    lips, hair above."""
    yy, xx = np.mgrid[:64, :64]
    labels = np.zeros((64, 64), np.int64)
    labels[yy < 12] = HAIR
    labels[((xx - 32) / 17) ** 2 + ((yy - 34) / 24) ** 2 < 1] = SKIN
    labels[26:41, 27:38] = NOSE
    labels[43:46, 24:41] = 12
    labels[46:49, 24:41] = 13
    return labels


def test_sync_with_the_parsing_mask_changes_only_its_pixels(fresh_models, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    from engine.lipsync.musetalk import crop_boxes
    from engine.mask import MaskSettings
    from engine.media.frame import planes_from_av
    from engine.media.reader import VideoReader
    from engine.pipeline import SyncSettings, sync
    from engine.render import ExportSettings
    from tests.conftest import shared_clip
    from tests.face_clip import write_face_clip
    from tests.media_factory import decode_all
    from tests.probe_models import wav2lip_probe

    monkeypatch.setenv("REDUB_CACHE_DIR", str(tmp_path / "cache"))
    clip = write_face_clip(tmp_path / "face.mp4", frames=20)
    dub = shared_clip("speech_radio31_16k.wav")
    import_model(_map_parser(fresh_models / "map.onnx", _face_map()), MODEL_ID)
    # A generator whose lower half of the face is black: every masked pixel there changes.
    import_model(wav2lip_probe(fresh_models / "masked.onnx", 0), "wav2lip_96")
    out = tmp_path / "synced.mkv"
    span = (0.2, 0.6)
    sessions = []
    sync(clip, dub, ExportSettings(output=str(out), codec="ffv1"), ranges=[span],
         settings=SyncSettings(backend="wav2lip", mask=MaskSettings(kind="parsing")),
         prepared=sessions.append)

    analysis = sessions[0].analysis  # with the landmarks the pipeline repaired
    parser = FaceParser()
    edited = 0
    try:
        with VideoReader(clip) as reader:
            for i, (s, o) in enumerate(zip(decode_all(clip), decode_all(out))):
                diff = planes_from_av(s)[0] != planes_from_av(o)[0]
                if not span[0] <= analysis.times[i] < span[1]:
                    assert not diff.any()
                    continue
                edited += 1
                frame = reader.frame(i)
                face = tuple(crop_boxes(analysis.landmarks[i][None], analysis.boxes[i][None],
                                        frame.width, frame.height)[0])
                mask = parser.mask(frame, face, (0, 0, frame.width, frame.height))
                assert diff.any() and not (diff & (mask == 0)).any()
                # The lips (rows 43..49 of 64, centred) change; the nose below the crop's
                # middle row (rows 33..40), inside the skin, does not.
                (cx0, cy0, _, _), half = crop_box(face)

                def at(row, col):  # a cell of the 64x64 map, in frame pixels
                    return cy0 + int(row * 2 * half / 64), cx0 + int(col * 2 * half / 64)

                assert diff[at(46, 32)] and mask[at(46, 32)] > 0.99
                assert mask[at(37, 32)] == 0 and not diff[at(37, 32)]
    finally:
        parser.close()
    assert edited == 10
