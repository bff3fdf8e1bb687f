"""The EDTalk backend: what it feeds FaceFusion's edtalk_256 contract, and `redub sync --backend
edtalk` end to end with a random model in that contract."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.audio.windows import mel_windows
from engine.cli import main
from engine.face.analysis import analyze_range
from engine.lipsync.backend import create_generator
from engine.lipsync.edtalk import WINDOW_LEAD
from engine.mask import MaskSettings, landmark_mask
from engine.media.frame import planes_from_av
from engine.media.probe import probe
from engine.models.session import clear_sessions
from engine.models.store import ModelMissingError, import_model
from engine.pipeline import SyncSettings
from tests.conftest import shared_clip
from tests.generator_harness import generated, sync_context
from tests.face_clip import write_face_clip
from tests.media_factory import decode_all

RANGE = (0.4, 1.0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("edtalk-cache")


@pytest.fixture(autouse=True)
def _env(cache, tmp_path, monkeypatch):
    # One face analysis of the clip serves every test; each test has its own model folder.
    monkeypatch.setenv("REDUB_CACHE_DIR", str(cache))
    monkeypatch.setenv("REDUB_MODELS_DIR", str(tmp_path / "models"))
    clear_sessions()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_face_clip(tmp_path_factory.mktemp("edtalk-clip") / "face.mp4", frames=30)


@pytest.fixture(scope="module")
def dub():
    return shared_clip("speech_radio31_16k.wav")


def _identity_model(path, fixed_batch: bool = False):
    """A model in the edtalk_256 contract giving back ``target``; ``source`` and ``weight`` are
    read (times zero)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    batch = 1 if fixed_batch else "B"
    nodes = [helper.make_node("ReduceMean", ["source"], ["level"], keepdims=0),
             helper.make_node("Mul", ["level", "weight"], ["scaled"]),
             helper.make_node("Mul", ["scaled", "zero"], ["nothing"]),
             helper.make_node("Add", ["target", "nothing"], ["output"])]
    graph = helper.make_graph(
        nodes, "edtalk_identity",
        [helper.make_tensor_value_info("source", TensorProto.FLOAT, [batch, 1, 80, 16]),
         helper.make_tensor_value_info("target", TensorProto.FLOAT, [batch, 3, 256, 256]),
         helper.make_tensor_value_info("weight", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, 256, 256])],
        [numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _random_model(path):
    """A torch module in the edtalk_256 contract (random convolution of the face, shifted by a
    random projection of the mel window times the weight), exported to ONNX."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")

    class RandomEDTalk(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.face = torch.nn.Conv2d(3, 3, 5, padding=2)
            self.audio = torch.nn.Linear(80 * 16, 3)

        def forward(self, source, target, weight):
            shift = self.audio(source.flatten(1)) * weight
            return torch.sigmoid(self.face(target) + shift[:, :, None, None])

    torch.manual_seed(0)
    torch.onnx.export(RandomEDTalk().eval(), (torch.zeros(1, 1, 80, 16),
                                              torch.zeros(1, 3, 256, 256), torch.ones(1)),
                      str(path), input_names=["source", "target", "weight"],
                      output_names=["output"], opset_version=17, dynamo=False,
                      dynamic_axes={"source": {0: "B"}, "target": {0: "B"}, "output": {0: "B"}})
    return path


def test_model_gets_the_aligned_rgb_face_the_centred_mel_window_and_the_weight(
        tmp_path, clip, dub, monkeypatch):
    ctx = sync_context(clip, dub, RANGE)
    ks = np.flatnonzero(ctx.edit & ctx.analysis.found)
    assert len(ks) == 15
    import_model(_identity_model(tmp_path / "identity.onnx"), "edtalk_256")
    generator = create_generator("edtalk", batch=4, weight=0.3)
    generator.prepare(ctx)
    calls = []
    run = generator.session.run
    monkeypatch.setattr(generator.session, "run", lambda feed: calls.append(
        {k: np.array(v) for k, v in feed.items()}) or run(feed))
    try:
        results = generated(generator, ctx, ks, threads=2)
    finally:
        generator.close()
    # Four batches of up to 4 frames on a fixed grid, whichever thread asked first.
    assert [c["target"].shape for c in calls] == [(4, 3, 256, 256)] * 3 + [(3, 3, 256, 256)]
    assert all(c["weight"].tolist() == [np.float32(0.3)] for c in calls)
    # EDTalk's own window: Wav2Lip's mel from two 25 fps frames before each frame.
    fed = np.concatenate([c["source"] for c in calls])
    expected = mel_windows(ctx.dub_audio.mel, ctx.analysis.times[ks] - WINDOW_LEAD)[:, None]
    np.testing.assert_array_equal(fed, expected)
    assert not np.array_equal(fed, ctx.dub_audio.windows[ks][:, None])
    # The face is RGB in [0, 1], aligned as FFHQ: eyes at the template's eye points (dark),
    # the bright bridge of the nose between them, the mouth (dark) at its mouth row.
    face = calls[0]["target"][0].transpose(1, 2, 0)
    assert 0.0 <= face.min() and face.max() <= 1.0
    grey = face.mean(2)
    patch = lambda x, y: grey[y - 4:y + 5, x - 4:x + 5].mean()  # noqa: E731
    bridge = patch(128, 118)
    assert max(patch(96, 120), patch(160, 120), patch(128, 183)) < bridge - 0.25
    frame = results[0][0]
    x0, y0, x1, y1 = (int(v) for v in ctx.analysis.crop_boxes[ks[0]])
    source_mean = frame.rgb_region(x0, y0, x1, y1).reshape(-1, 3).mean(0) / 255.0
    assert np.argmax(face.reshape(-1, 3).mean(0)) == np.argmax(source_mean)  # not BGR
    # The identity model's face goes back where it came from: the box looks as it did.
    for frame, gen in results[::5]:
        x0, y0, x1, y1 = gen.box
        original = frame.rgb_region(x0, y0, x1, y1).astype(float)
        assert gen.image.shape == original.shape and gen.image.dtype == np.uint8
        assert np.abs(gen.image.mean((0, 1)) - original.mean((0, 1))).max() < 2.0
        assert np.abs(gen.image - original).mean() < 6.0
        np.testing.assert_array_equal(gen.landmarks, ctx.analysis.landmarks[
            frame.index - ctx.analysis.start])


def test_a_model_with_batch_one_runs_frame_by_frame(tmp_path, clip, dub, monkeypatch):
    ctx = sync_context(clip, dub, RANGE)
    ks = np.flatnonzero(ctx.edit & ctx.analysis.found)
    import_model(_identity_model(tmp_path / "one.onnx", fixed_batch=True), "edtalk_256")
    generator = create_generator("edtalk", batch=8)
    generator.prepare(ctx)
    sizes = []
    run = generator.session.run
    monkeypatch.setattr(generator.session, "run",
                        lambda feed: sizes.append(len(feed["target"])) or run(feed))
    try:
        generated(generator, ctx, ks[:8])
    finally:
        generator.close()
    assert sizes == [1] * 8


def test_a_missing_model_says_what_to_put_where(clip, dub):
    generator = create_generator("edtalk")
    with pytest.raises(ModelMissingError, match="edtalk_256.*redub models download"):
        generator.prepare(sync_context(clip, dub, RANGE))
    generator.close()


def test_sync_with_edtalk_changes_only_pixels_inside_the_mask(tmp_path, clip, dub):
    import_model(_random_model(tmp_path / "edtalk_random.onnx"), "edtalk_256")
    out = tmp_path / "synced.mkv"
    code = main(["sync", str(clip), "--audio", str(dub), "--backend", "edtalk",
                 "--range", f"{RANGE[0]}-{RANGE[1]}", "--codec", "ffv1", "-o", str(out)])
    assert code == 0
    assert probe(out).video[0].frame_count == 30

    settings = SyncSettings().mask
    analysis = analyze_range(clip)
    changed = 0
    for i, (s, o) in enumerate(zip(decode_all(clip), decode_all(out))):
        diff = planes_from_av(s)[0] != planes_from_av(o)[0]
        if not RANGE[0] <= analysis.times[i] < RANGE[1]:
            assert not diff.any(), f"frame {i} outside the range changed"
            continue
        assert diff.sum() > 500, f"frame {i} in the range is barely changed"
        changed += 1
        # The pipeline's lower-face mask (EDTalk draws the target's own jaw), give or take the
        # landmark repair and the distance field's sampling: a few pixels.
        mask = landmark_mask(analysis.landmarks[i], (0, 0, diff.shape[1], diff.shape[0]),
                             MaskSettings(settings.kind, settings.dilation, settings.feather))
        near = cv2.dilate((mask > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        assert not (diff & ~near).any(), f"frame {i} changed outside the mask"
        assert diff[mask > 0.99].mean() > 0.9  # inside it, the new face
    assert changed == 15
