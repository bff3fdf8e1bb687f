"""The Wav2Lip backend: what it feeds the model, batching, and `redub sync --backend wav2lip`
end to end with the full architecture (random weights)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.audio import SAMPLE_RATE
from engine.cli import main
from engine.face.analysis import analyze_range
from engine.lipsync.backend import create_generator
from engine.media.audio import read_audio
from engine.media.frame import planes_from_av
from engine.media.probe import probe
from engine.models.store import ModelMissingError, import_model
from tests.conftest import shared_clip
from tests.generator_harness import generated, sync_context
from tests.face_clip import write_face_clip
from tests.media_factory import decode_all
from tests.probe_models import wav2lip_probe

RANGE = (0.4, 1.6)


# One face analysis per clip serves every test of the module; each test has its own models.
pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_face_clip(tmp_path_factory.mktemp("wav2lip-clip") / "face.mp4")


@pytest.fixture(scope="module")
def dub():
    return shared_clip("speech_radio31_16k.wav")


def test_model_gets_the_bgr_crop_masked_and_whole_in_batches(tmp_path, clip, dub, monkeypatch):
    ctx = sync_context(clip, dub, RANGE)
    ks = np.flatnonzero(ctx.edit & ctx.analysis.found)
    assert len(ks) == 30
    import_model(wav2lip_probe(tmp_path / "reference.onnx", 3), "wav2lip_96")
    generator = create_generator("wav2lip", batch=8)
    generator.prepare(ctx)
    calls = []
    run = generator.session.run
    monkeypatch.setattr(generator.session, "run", lambda feed: calls.append(
        {k: v.shape for k, v in feed.items()}) or run(feed))
    try:
        results = generated(generator, ctx, ks, threads=2)
        # Frames were asked for in order from two threads: four batches of up to 8.
        assert [c["target"][0] for c in calls] == [8, 8, 8, 6]
        assert calls[0]["source"] == (8, 1, 80, 16)
        # A frame long gone from the kept batches is computed again, not held forever.
        generated(generator, ctx, ks[:1])
        assert len(calls) == 5
    finally:
        generator.close()
    # The reference channels come back as the face itself: same colours (not swapped), same
    # place, at the 96-pixel model's resolution.
    for frame, gen in results[::7]:
        x0, y0, x1, y1 = gen.box
        original = frame.rgb_region(x0, y0, x1, y1).astype(float)
        assert gen.image.shape == original.shape and gen.image.dtype == np.uint8
        assert np.abs(gen.image.mean((0, 1)) - original.mean((0, 1))).max() < 2.0
        assert np.abs(gen.image - original).mean() < 8.0

    import_model(wav2lip_probe(tmp_path / "masked.onnx", 0), "wav2lip_96")
    generator = create_generator("wav2lip", batch=4)
    generator.prepare(ctx)
    try:
        (frame, gen), = generated(generator, ctx, ks[10:11])
    finally:
        generator.close()
    k = ks[10]
    lm = ctx.analysis.landmarks[k] - gen.box[:2]
    # Lower half blanked: black at the chin and lips, the picture on the nose and cheeks.
    for point in (lm[8] - (0, 4), lm[57], lm[66]):
        assert gen.image[int(point[1]), int(point[0])].max() < 12
    for point in (lm[28], (lm[0] + lm[29]) / 2, (lm[16] + lm[29]) / 2):
        assert gen.image[int(point[1]), int(point[0])].max() > 40


def test_a_missing_model_says_what_to_put_where(clip, dub):
    generator = create_generator("wav2lip_gan")
    with pytest.raises(ModelMissingError, match="wav2lip_gan_96.*redub models download"):
        generator.prepare(sync_context(clip, dub, RANGE))
    generator.close()


def test_sync_with_wav2lip_changes_only_the_lower_face(wav2lip_model, clip, dub, tmp_path):
    import_model(wav2lip_model.onnx, "wav2lip_96")
    out = tmp_path / "synced.mkv"
    code = main(["sync", str(clip), "--audio", str(dub), "--backend", "wav2lip",
                 "--range", f"{RANGE[0]}-{RANGE[1]}", "--codec", "ffv1", "-o", str(out)])
    assert code == 0
    src_info, out_info = probe(clip).video[0], probe(out).video[0]
    assert (out_info.width, out_info.height) == (src_info.width, src_info.height)
    assert out_info.frame_count == src_info.frame_count == 50
    assert out_info.frame_rate == src_info.frame_rate

    # The dub plays inside the range (the clip itself is silent).
    heard = read_audio(out, rate=SAMPLE_RATE, channels=1).samples[:, 0]
    said = read_audio(dub, rate=SAMPLE_RATE, channels=1).samples[:, 0]
    a, b = (int(t * SAMPLE_RATE) for t in (RANGE[0] + 0.1, RANGE[1] - 0.1))
    assert np.corrcoef(heard[a:b], said[a:b])[0, 1] > 0.95
    assert np.abs(heard[: int(0.3 * SAMPLE_RATE)]).max() < 1e-3

    analysis = analyze_range(clip)
    changed = 0
    for i, (s, o) in enumerate(zip(decode_all(clip), decode_all(out))):
        diff = np.any([p != q for p, q in zip(planes_from_av(s)[:1], planes_from_av(o)[:1])], 0)
        if not RANGE[0] <= analysis.times[i] < RANGE[1]:
            assert not diff.any(), f"frame {i} outside the range changed"
            continue
        ys, xs = np.nonzero(diff)
        assert ys.size, f"frame {i} in the range is unchanged"
        changed += 1
        x0, y0, x1, y1 = analysis.crop_boxes[i]
        assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1 and y0 - 1 <= ys.min()
        assert ys.max() <= y1 + 1
        # The lower face only: nothing at or above the bridge of the nose.
        assert ys.min() > analysis.landmarks[i][27:31, 1].min()
    assert changed == 30
