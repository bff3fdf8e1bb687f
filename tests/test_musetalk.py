"""MuseTalk: Whisper's log-mel (against transformers) and the per-frame windows (by timestamp, at
25, 60 fps and a variable rate), the crop box, what the generator feeds the networks, and
`redub sync --backend musetalk` end to end on tiny random networks in the official formats."""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from engine.audio import SAMPLE_RATE, features_from_samples
from engine.audio.whisper import (ENCODER_STEPS, SEGMENT_SAMPLES, WhisperFeatures, segment_mels,
                                  track_steps, whisper_log_mel, whisper_windows)
from engine.cli import main
from engine.face.analysis import analyze_range
from engine.lipsync.backend import SyncContext, create_generator
from engine.lipsync import musetalk
from engine.lipsync.musetalk import (EXTRA_MARGIN, crop_boxes, crop_face, face_pixels,
                                     vae_inputs)
from engine.media.audio import read_audio
from engine.media.frame import planes_from_av
from engine.media.reader import VideoReader
from engine.models.manifest import get_entry
from engine.models.session import ModelSession
from engine.models.store import ModelMissingError, import_model
from engine.pipeline import SyncSettings, prepare_sync
from tests.conftest import shared_clip
from tests.generator_harness import edited_frames_change_only_in_mask
from tests.face_clip import SIZE, write_face_clip
from tests.media_factory import decode_all, make_video
from tests.musetalk_factory import musetalk_onnx  # noqa: F401

RANGE = (0.4, 1.2)
LAYERS, WIDTH = 5, 384  # whisper-tiny: embeddings + 4 layers, d_model 384


# One face analysis per clip serves every test of the module; each test has its own models.
pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.fixture(scope="module")
def dub():
    return shared_clip("speech_radio31_16k.wav")


@pytest.fixture(scope="module")
def samples(dub):
    return read_audio(dub, rate=SAMPLE_RATE, channels=1).samples[:, 0]


# -- Whisper features ------------------------------------------------------------------------

def test_log_mel_matches_transformers_whisper_feature_extractor():
    transformers = pytest.importorskip("transformers")
    extractor = transformers.WhisperFeatureExtractor(feature_size=80, sampling_rate=16000,
                                                     hop_length=160, chunk_length=30, n_fft=400)
    # Two full 30 s segments of one track, and a short track padded to 30 s.
    long = read_audio(shared_clip("speech_eng_long.wav"), rate=SAMPLE_RATE, channels=1).samples
    short = read_audio(shared_clip("speech_radio31_16k.wav"), rate=SAMPLE_RATE,
                       channels=1).samples
    for track in (long[:, 0], short[:, 0]):
        ours = segment_mels(track)
        assert ours.shape == (math.ceil(len(track) / SEGMENT_SAMPLES), 80, 3000)
        for i, mel in enumerate(ours):
            segment = track[i * SEGMENT_SAMPLES:(i + 1) * SEGMENT_SAMPLES]
            ref = extractor(segment, sampling_rate=16000, return_tensors="np").input_features[0]
            # transformers computes in float32 (torch): the difference is its rounding.
            assert np.abs(mel - ref).max() < 5e-5
            assert mel.dtype == np.float32 and mel.min() >= ref.max() - 2.0 - 1e-5
    # Silence: every value at the floor, log10(1e-10) -> (-10 + 4) / 4.
    assert np.all(whisper_log_mel(np.zeros(100, np.float32)) == np.float32(-1.5))


def _mel_encoder(calls: list[int] | None = None):
    """A stand-in encoder whose step j holds mel frame 2j (band b at position b of each of
    the L rows, shifted by the row): which audio each step came from can be read back."""
    def encode(mels: np.ndarray) -> np.ndarray:
        if calls is not None:
            calls.append(len(mels))
        frames = mels[:, :, 0::2].transpose(0, 2, 1)  # (B, 1500, 80)
        hidden = np.zeros((len(mels), ENCODER_STEPS, LAYERS, WIDTH), np.float32)
        for layer in range(LAYERS):
            hidden[:, :, layer, :80] = frames + layer
        return hidden
    return encode


def test_segments_are_encoded_from_the_start_joined_and_trimmed(samples):
    rng = np.random.default_rng(0)
    # 65.3 s: two full segments and a short third; the speech sits across the joins.
    track = (0.01 * rng.standard_normal(int(65.3 * SAMPLE_RATE))).astype(np.float32)
    for at in (25.0, 55.0):
        track[int(at * SAMPLE_RATE):int(at * SAMPLE_RATE) + len(samples)] += samples
    calls: list[int] = []
    features = WhisperFeatures(track, _mel_encoder(calls), batch=2)
    assert features.steps == track_steps(len(track)) == math.floor(65.3 * 50) == 3265
    # Frames in the first 20 s need only the first segment.
    features.windows(np.arange(0, 20, 0.04))
    assert calls == [1]
    whole = features.track()
    assert calls == [1, 2] and whole.shape == (3265, LAYERS, WIDTH)
    mels = segment_mels(track)
    for step in (0, 1499, 1500, 2999, 3000, 3264):
        segment, local = divmod(step, ENCODER_STEPS)
        np.testing.assert_array_equal(whole[step, 2, :80], mels[segment, :, 2 * local] + 2)
    # Windows read the same track, whichever order segments were encoded in.
    times = np.array([0.0, 29.96, 30.0, 59.99, 65.2, 65.29, 70.0])
    np.testing.assert_array_equal(features.windows(times), whisper_windows(whole, times))


def _official_windows(track: np.ndarray, n_samples: int, fps: int = 25) -> np.ndarray:
    """MuseTalk's ``get_whisper_chunk`` restated: zeros before (2 * ceil(50 / fps)) and after,
    frame i's window starts at floor(i * 50 / fps) in the padded track."""
    pad = math.ceil(50 / fps)
    padded = np.concatenate([np.zeros((2 * pad, *track.shape[1:]), np.float32), track,
                             np.zeros((6 * pad, *track.shape[1:]), np.float32)])
    frames = math.floor(n_samples / SAMPLE_RATE * fps)
    out = [padded[math.floor(i * 50 / fps):][:10] for i in range(frames)]
    return np.stack(out).reshape(frames, 10 * track.shape[1], track.shape[2])


def test_windows_at_25_fps_are_musetalks():
    n = int(3.37 * SAMPLE_RATE)
    steps = track_steps(n)
    rng = np.random.default_rng(1)
    track = rng.standard_normal((steps, 2, 3)).astype(np.float32)
    times = np.arange(math.floor(n / SAMPLE_RATE * 25)) / 25
    ours = whisper_windows(track, times)
    np.testing.assert_array_equal(ours, _official_windows(track, n))
    # Frame i: steps 2i - 4 .. 2i + 5, step-major; zeros outside the track.
    for i in (0, 1, 2, 40, len(times) - 1):
        for j in range(10):
            step = 2 * i - 4 + j
            want = track[step] if 0 <= step < steps else np.zeros((2, 3), np.float32)
            np.testing.assert_array_equal(ours[i, 2 * j:2 * j + 2], want)
    # Before the dub starts and after it ends: silence, as zeros.
    assert not whisper_windows(track, np.array([-0.2, steps / 50 + 0.08])).any()


def _vfr_durations() -> list[int]:
    return [17, 33, 50, 17, 17, 66, 33, 40, 20, 33] * 4


@pytest.mark.parametrize("kind", ["60fps", "vfr"])
def test_windows_follow_each_frames_timestamp(tmp_path, kind):
    if kind == "60fps":
        path = make_video(tmp_path / "v.mp4", frames=40, rate=60)
    else:
        path = make_video(tmp_path / "v.mkv", frames=40, codec="ffv1", pix_fmt="yuv420p",
                          durations_ms=_vfr_durations())
    with VideoReader(path) as reader:
        times = np.asarray(reader.times, np.float64)
    if kind == "vfr":
        np.testing.assert_allclose(np.diff(times), np.array(_vfr_durations()[:-1]) / 1000)
    else:
        np.testing.assert_allclose(times, np.arange(40) / 60)
    track = np.arange(1, 200, dtype=np.float32)[:, None, None] * np.ones((1, 1, 2), np.float32)
    windows = whisper_windows(track, times)
    for t, window in zip(times, windows):
        s = math.floor(t * 50 + 1e-6)
        want = [float(v + 1) if v >= 0 else 0.0 for v in range(s - 4, s + 6)]
        assert window[:, 0].tolist() == want


# -- crop, normalisation, decoding ------------------------------------------------------------

def _official_box(lm: np.ndarray, face: tuple[int, int, int, int], height: int,
                  margin: int) -> tuple[int, int, int, int]:
    """MuseTalk's ``get_landmark_and_bbox`` and the inference's margin, restated per frame."""
    lm = lm.astype(np.int32)
    half = lm[29]
    dist = np.max(lm[:, 1]) - half[1]
    upper = max(0, half[1] - dist)
    x1, y1, x2, y2 = np.min(lm[:, 0]), int(upper), np.max(lm[:, 0]), np.max(lm[:, 1])
    if y2 - y1 <= 0 or x2 - x1 <= 0 or x1 < 0:
        x1, y1, x2, y2 = face
    return int(x1), int(y1), int(x2), min(int(y2) + margin, height)


def test_crop_box_is_musetalks_formula():
    rng = np.random.default_rng(2)
    base = np.zeros((68, 2))
    base[:, 0] = np.linspace(100.7, 220.3, 68)
    base[:, 1] = np.linspace(150.2, 300.9, 68)
    base[29] = (160.9, 210.6)
    frames = [base, base + (0.5, 40.0), base - (0.0, 120.0)]  # chin at the frame's foot;
    frames.append(base - (102.0, 0.0))  # starts left of the frame: the face box
    flat = base.copy()
    flat[:, 1] = 180.0  # zero height: the face box
    frames.append(flat)
    frames += [base + rng.uniform(-20, 20, (68, 2)) for _ in range(20)]
    landmarks = np.stack(frames)
    faces = rng.integers(20, 200, (len(frames), 4))
    faces[:, 2:] += faces[:, :2]
    for version, margin in EXTRA_MARGIN.items():
        ours = crop_boxes(landmarks, faces.astype(np.float64), 400, 340, margin)
        want = [_official_box(lm, tuple(f), 340, margin) for lm, f in zip(landmarks, faces)]
        assert ours.tolist() == [list(b) for b in want], version
    assert EXTRA_MARGIN == {"v15": 10, "v10": 0}
    # The nose is the middle row: 29.y - (chin - 29.y), truncated to whole pixels first.
    assert crop_boxes(base[None], faces[:1], 400, 340, 10)[0].tolist() == [100, 120, 220, 310]


def test_vae_inputs_blank_the_lower_half_and_faces_round_half_to_even():
    rng = np.random.default_rng(3)
    crop = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    face = crop_face(crop)
    np.testing.assert_array_equal(
        face, cv2.resize(crop, (256, 256), interpolation=cv2.INTER_LANCZOS4))
    masked, full = vae_inputs(face[None])
    assert masked.shape == full.shape == (1, 3, 256, 256) and full.dtype == np.float32
    want = ((face.astype(np.float64) / 255).astype(np.float32) - 0.5) / 0.5
    np.testing.assert_array_equal(full[0], want.transpose(2, 0, 1))
    np.testing.assert_array_equal(masked[0, :, :128], full[0, :, :128])
    assert np.all(masked[0, :, 128:] == -1.0)
    decoded = np.array([0.0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 1.0, 1.2], np.float32)
    pixels = face_pixels(np.broadcast_to(decoded[None, None, None], (1, 3, 1, 6)))
    assert pixels.shape == (1, 1, 6, 3)
    assert pixels[0, 0, :, 0].tolist() == np.round(np.clip(decoded * np.float32(255), 0,
                                                           255)).astype(int).tolist()


# -- the generator, on probe models whose answers are known ----------------------------------

def _save(onnx, graph, path):
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _install_probes(folder, unet_first: int = 4) -> None:
    """Probe models in the four MuseTalk contracts, imported into the model folder.

    Encoder: step j repeats mel frame 2j (so the window a frame got can be read back). VAE
    encoder: 8x8 block means (latents are the picture at 32x32, plus a fourth channel). UNet:
    the latent channels ``unet_first .. + 3`` (4: the whole crop's, 0: the masked crop's), the
    audio read (times zero). VAE decoder: the latents' first three channels, 8x nearest, back
    to [0, 1]. So the drawn face is the crop itself, blockwise.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    def const(name, value, dtype=np.int64):
        return nh.from_array(np.array(value, dtype), name)

    def io(name, shape):
        return h.make_tensor_value_info(name, T.FLOAT, shape)

    graphs = {
        "musetalk_whisper_encoder": h.make_graph([
            h.make_node("Slice", ["input_features", "s0", "s1", "s2", "s3"], ["even"]),
            h.make_node("Transpose", ["even"], ["steps"], perm=[0, 2, 1]),
            h.make_node("Tile", ["steps", "reps"], ["tiled"]),
            h.make_node("Reshape", ["tiled", "shape"], ["hidden_states"]),
        ], "whisper_probe", [io("input_features", ["B", 80, 3000])],
            [io("hidden_states", ["B", 1500, LAYERS, WIDTH])],
            [const("s0", [0]), const("s1", [3000]), const("s2", [2]), const("s3", [2]),
             const("reps", [1, 1, LAYERS * WIDTH // 80]),
             const("shape", [-1, 1500, LAYERS, WIDTH])]),
        "musetalk_vae_encoder": h.make_graph([
            h.make_node("AveragePool", ["image"], ["small"], kernel_shape=[8, 8], strides=[8, 8]),
            h.make_node("ReduceMean", ["small", "axis1"], ["grey"], keepdims=1),
            h.make_node("Concat", ["small", "grey"], ["latents"], axis=1),
        ], "vae_encoder_probe", [io("image", ["B", 3, 256, 256])],
            [io("latents", ["B", 4, 32, 32])], [const("axis1", [1])]),
        "musetalk_unet_v15": h.make_graph([
            # Constants the shapes depend on sit in the graph, not in the external data.
            *(h.make_node("Constant", [], [name], value=const(name, value)) for name, value in
              (("c0", [unet_first]), ("c1", [unet_first + 4]), ("axis1", [1]),
               ("axes12", [1, 2]), ("axis3", [3]))),
            h.make_node("Slice", ["latents", "c0", "c1", "axis1"], ["picked"]),
            h.make_node("ReduceMean", ["audio", "axes12"], ["level"], keepdims=1),
            h.make_node("Unsqueeze", ["level", "axis3"], ["level4"]),
            h.make_node("Mul", ["level4", "zero"], ["nothing"]),
            h.make_node("Add", ["picked", "nothing"], [_unet_output()]),
        ], "unet_probe", [io("latents", ["B", 8, 32, 32]), io("audio", ["B", 10 * LAYERS, WIDTH])],
            [io(_unet_output(), ["B", 4, 32, 32])],
            [const("zero", 0.0, np.float32)]),
        "musetalk_vae_decoder": h.make_graph([
            h.make_node("Slice", ["latents", "c0", "c1", "axis1"], ["rgb"]),
            h.make_node("Resize", ["rgb", "", "scales"], ["big"], mode="nearest"),
            h.make_node("Mul", ["big", "half"], ["scaled"]),
            h.make_node("Add", ["scaled", "half"], ["image"]),
        ], "vae_decoder_probe", [io("latents", ["B", 4, 32, 32])],
            [io("image", ["B", 3, 256, 256])],
            [const("c0", [0]), const("c1", [3]), const("axis1", [1]),
             const("scales", [1, 1, 8, 8], np.float32), const("half", 0.5, np.float32)]),
    }
    (folder / "probes").mkdir()
    for model, graph in graphs.items():
        path = _save(onnx, graph, folder / "probes" / f"{model}.onnx")
        if get_entry(model).data_file:  # the real UNet is too big for one protobuf
            stored = onnx.load(path)
            onnx.save(stored, path, save_as_external_data=True, all_tensors_to_one_file=True,
                      location=get_entry(model).data_file, size_threshold=0)
        import_model(path, model)


def _unet_output() -> str:
    """The UNet output's name in the contract (any name where it matches by position)."""
    return get_entry("musetalk_unet_v15").contract.outputs[0].name or "sample"


def _context(clip, samples, times=None) -> SyncContext:
    analysis = analyze_range(clip)
    edit = (analysis.times >= RANGE[0]) & (analysis.times < RANGE[1])
    return SyncContext(video=str(clip), analysis=analysis, source_audio=None,
                       dub_audio=features_from_samples(samples, analysis.times), edit=edit,
                       train=np.ones(len(analysis), bool), fps=analysis.fps,
                       dub_times=times, dub_samples=samples)


def _region(ctx, k):
    """The box the pipeline asks for: the face crop, on even pixels."""
    x0, y0, x1, y1 = ctx.analysis.crop_boxes[k]
    return tuple(int(v) // 2 * 2 for v in (x0, y0, x1, y1))


def _generated(generator, ctx, ks, threads=1):
    def one(k):
        frame = reader.frame(ctx.analysis.start + k)
        return frame, generator.generate(frame, k, _region(ctx, k))

    with VideoReader(ctx.video) as reader, ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, ks))


def _expected_windows(samples, times) -> np.ndarray:
    """The windows the probe encoder gives frames at ``times``, built from the log-mel."""
    mels = segment_mels(samples)
    steps = mels[:, :, 0::2].transpose(0, 2, 1).reshape(-1, 80)[:track_steps(len(samples))]
    track = np.tile(steps, (1, LAYERS * WIDTH // 80)).reshape(-1, LAYERS, WIDTH)
    return whisper_windows(track, times)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_face_clip(tmp_path_factory.mktemp("musetalk-clip") / "face.mp4", frames=36)


def _spy(monkeypatch, session, calls):
    run = session.run
    monkeypatch.setattr(session, "run", lambda feed: calls.append(feed) or run(feed))


def test_the_networks_get_musetalks_crops_and_windows_in_batches(tmp_path, clip, samples,
                                                                 monkeypatch):
    _install_probes(tmp_path)
    ctx = _context(clip, samples, times=None)
    ks = np.flatnonzero(ctx.edit & ctx.analysis.found)
    assert len(ks) == 20
    generator = create_generator("musetalk", batch=4)
    generator.prepare(ctx)
    unet, vae = [], []
    _spy(monkeypatch, generator.sessions["musetalk_unet_v15"], unet)
    _spy(monkeypatch, generator.sessions["musetalk_vae_encoder"], vae)
    try:
        results = _generated(generator, ctx, ks, threads=2)
        _generated(generator, ctx, ks[:1])  # long gone from the kept batches: run again
    finally:
        generator.close()
    # Five batches of 4 on a fixed grid, whichever thread asked (the masked and the whole
    # crops through the VAE encoder, 4 at a time); the first frame again once its batch is
    # gone from the three kept.
    assert [len(c["latents"]) for c in unet] == [4] * 6
    assert [len(c["image"]) for c in vae] == [4] * 12
    # Each frame's window: the encoded dub at the frame's time (25 fps: steps 2i-4 .. 2i+5).
    fed = np.concatenate([c["audio"] for c in unet[:5]])
    np.testing.assert_array_equal(fed, _expected_windows(samples, ctx.analysis.times[ks]))
    # The probes draw the crop itself (8x8 blocks): same place, same colours, not swapped.
    boxes = crop_boxes(ctx.analysis.landmarks, ctx.analysis.boxes, *SIZE, 10)
    for k, (frame, gen) in zip(ks[::6], results[::6]):
        x0, y0, x1, y1 = gen.box
        assert gen.box == _region(ctx, k) and gen.image.dtype == np.uint8
        original = frame.rgb_region(x0, y0, x1, y1).astype(float)
        assert gen.image.shape == original.shape
        np.testing.assert_array_equal(gen.landmarks, ctx.analysis.landmarks[k])
        bx0, by0, bx1, by1 = boxes[k]
        inside = np.zeros(original.shape[:2], bool)
        inside[max(by0 - y0, 0):by1 - y0, max(bx0 - x0, 0):bx1 - x0] = True
        # Outside MuseTalk's crop box the region keeps the frame's pixels exactly.
        np.testing.assert_array_equal(gen.image[~inside], original[~inside])
        # Inside, the crop's 8x8 block means at 256x256, resized back onto the box: the face
        # is put back where it was cut out.
        crop = frame.rgb_region(bx0, by0, bx1, by1)
        blocks = vae_inputs(crop_face(crop)[None])[1][0].reshape(3, 32, 8, 32, 8).mean((2, 4))
        face = face_pixels(np.repeat(np.repeat(blocks, 8, 1), 8, 2)[None] * 0.5 + 0.5)[0]
        want = cv2.resize(face, (bx1 - bx0, by1 - by0), interpolation=cv2.INTER_LINEAR)
        drawn = gen.image[max(by0 - y0, 0):by1 - y0, max(bx0 - x0, 0):bx1 - x0]
        want = want[max(y0 - by0, 0):, max(x0 - bx0, 0):][:drawn.shape[0], :drawn.shape[1]]
        assert np.abs(drawn.astype(int) - want).max() <= 1
        assert np.abs(drawn.mean((0, 1)) - crop.mean((0, 1))).max() < 2.0


def test_the_masked_crop_has_its_lower_half_blank(tmp_path, clip, samples):
    _install_probes(tmp_path, unet_first=0)
    ctx = _context(clip, samples)
    k = int(np.flatnonzero(ctx.edit & ctx.analysis.found)[5])
    generator = create_generator("musetalk")
    generator.prepare(ctx)
    try:
        (frame, gen), = _generated(generator, ctx, [k])
    finally:
        generator.close()
    x0, y0 = gen.box[:2]
    bx0, by0, bx1, by1 = crop_boxes(ctx.analysis.landmarks, ctx.analysis.boxes, *SIZE, 10)[k]
    middle = (by0 + by1) // 2 - y0
    lower = gen.image[middle + 4:by1 - y0, bx0 - x0:bx1 - x0]
    upper = gen.image[max(by0 - y0, 0):middle - 4, bx0 - x0:bx1 - x0]
    assert lower.max() == 0 and upper.mean() > 40


def test_a_replan_keeps_the_encoded_dub(tmp_path, clip, samples, monkeypatch):
    _install_probes(tmp_path)
    ctx = _context(clip, samples)
    generator = create_generator("musetalk")
    generator.prepare(ctx)
    encoded = []
    _spy(monkeypatch, generator.sessions["musetalk_whisper_encoder"], encoded)
    try:
        generator.prepare(replace(ctx, dub_times=ctx.analysis.times - 0.1))  # a new offset
        assert not encoded
        generator.prepare(replace(ctx, dub_samples=samples * 0.5))  # another dub
        assert len(encoded) == 1
    finally:
        generator.close()


def test_gpu_providers_take_the_fp16_files_that_are_installed(tmp_path, clip, samples,
                                                              monkeypatch):
    _install_probes(tmp_path)
    probe = tmp_path / "probes" / "musetalk_vae_encoder.onnx"
    import_model(probe, "musetalk_vae_encoder_fp16")  # float32 tensors: still the contract
    ctx = _context(clip, samples)
    on_cpu = create_generator("musetalk")
    on_cpu.prepare(ctx)
    on_cpu.close()
    assert on_cpu.sessions["musetalk_vae_encoder"].path.name == "musetalk_vae_encoder.onnx"
    monkeypatch.setattr(musetalk, "provider_order", lambda preferred: [
        ("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})])
    on_gpu = create_generator("musetalk")
    on_gpu.prepare(ctx)
    on_gpu.close()
    files = {model: s.path.name for model, s in on_gpu.sessions.items()}
    assert files["musetalk_vae_encoder"] == "musetalk_vae_encoder_fp16.onnx"
    assert files["musetalk_unet_v15"] == "musetalk_unet_v15.onnx"  # no fp16 file installed


def test_v10_crops_without_the_margin_and_runs_its_own_unet(tmp_path, clip, samples):
    _install_probes(tmp_path)
    generator = create_generator("musetalk_v10")
    assert generator.name == "musetalk_v10"
    with pytest.raises(ModelMissingError, match="musetalk_unet_v10"):
        generator.prepare(_context(clip, samples))
    generator.close()
    assert crop_boxes(np.full((1, 68, 2), 50.0) + np.arange(68)[None, :, None],
                      np.zeros((1, 4)), 200, 200, EXTRA_MARGIN["v10"])[0, 3] == 117


def test_a_missing_model_says_what_to_put_where(clip, samples):
    generator = create_generator("musetalk")
    with pytest.raises(ModelMissingError, match="musetalk_whisper_encoder"):
        generator.prepare(_context(clip, samples))
    generator.close()


def _vfr_face_clip(path, source):
    """``source``'s first frames re-timed with irregular durations (variable frame rate)."""
    with VideoReader(source) as reader, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "18", "bf": "0"}
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        t = 0
        for frame, duration in zip(reader.frames(0, len(_vfr_durations())), _vfr_durations()):
            picture = av.VideoFrame.from_ndarray(frame.rgb(), format="rgb24")
            picture.pts, picture.time_base = t, Fraction(1, 1000)
            t += duration
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize("kind", ["60fps", "vfr"])
def test_each_frame_hears_the_dub_at_its_own_time(tmp_path, clip, dub, samples, kind,
                                                   monkeypatch):
    _install_probes(tmp_path)
    if kind == "60fps":
        video = write_face_clip(tmp_path / "face60.mp4", frames=40, fps=60)
    else:
        video = _vfr_face_clip(tmp_path / "facevfr.mkv", clip)
    offset = 0.3  # the dub starts 0.3 s into the clip: the first frames hear nothing yet
    with prepare_sync(video, dub, dub_offset=offset, ranges=[(0.1, 0.7)],
                      settings=SyncSettings(backend="musetalk")) as session, \
            VideoReader(video) as reader:
        fed = []  # the UNet's audio input, from here on (not the sessions' warm-up runs)
        run = ModelSession.run
        monkeypatch.setattr(ModelSession, "run", lambda self, feed: (
            fed.append(feed["audio"]) if "audio" in feed else None) or run(self, feed))
        edited = session.edited_frames()
        for i in edited:
            session.render_frame(reader.frame(int(i)))
        times = session.analysis.times[edited - session.analysis.start]
    assert len(edited) >= 15
    steps = np.diff(times)
    assert (np.ptp(steps) > 0.02) == (kind == "vfr")
    np.testing.assert_array_equal(np.concatenate(fed), _expected_windows(samples, times - offset))
    assert not np.concatenate(fed)[0].any()  # before the dub: silence


def test_an_unreadable_dub_is_one_line_naming_it(tmp_path, clip, capsys):
    _install_probes(tmp_path)
    bad = tmp_path / "dub.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    code = main(["sync", str(clip), "--audio", str(bad), "--backend", "musetalk",
                 "--range", f"{RANGE[0]}-{RANGE[1]}", "-o", str(tmp_path / "out.mkv")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 1 and len(errors) == 1 and f"error: {bad}: " in errors[0]


def test_sync_with_musetalk_changes_only_masked_pixels(musetalk_onnx, clip, dub, tmp_path):
    for model in ("musetalk_whisper_encoder", "musetalk_vae_encoder", "musetalk_vae_decoder",
                  "musetalk_unet_v15"):
        import_model(musetalk_onnx[model], model)
    out = tmp_path / "synced.mkv"
    edited = (0.4, 0.8)
    code = main(["sync", str(clip), "--audio", str(dub), "--backend", "musetalk",
                 "--range", f"{edited[0]}-{edited[1]}", "--codec", "ffv1", "-o", str(out)])
    assert code == 0
    changed = edited_frames_change_only_in_mask(clip, out, edited)
    assert len(changed) == 10  # every frame of the range


def test_sync_with_liveportrait_encodes_faces_with_the_mouth_closed(musetalk_onnx, clip, dub,
                                                                    tmp_path, monkeypatch):
    """``--stabilizer liveportrait``: MuseTalk's own crops have their mouths closed before the
    VAE encoder sees them (both pictures: the whole crop is the reference); only masked pixels
    of the frame change."""
    from tests.liveportrait_models import install, write_models

    for model in ("musetalk_whisper_encoder", "musetalk_vae_encoder", "musetalk_vae_decoder",
                  "musetalk_unet_v15"):
        import_model(musetalk_onnx[model], model)
    (tmp_path / "liveportrait").mkdir()
    install(write_models(tmp_path / "liveportrait"))
    encoded: dict[str, dict[float, np.ndarray]] = {}
    draw = musetalk.MuseTalkGenerator.draw
    edited = (0.4, 0.8)
    outs = {}
    for name in ("geometric", "liveportrait"):
        faces = encoded[name] = {}

        def spy(self, batch, times, faces=faces):
            faces.update({round(float(t), 4): f for t, f in zip(times, batch)})
            return draw(self, batch, times)

        monkeypatch.setattr(musetalk.MuseTalkGenerator, "draw", spy)
        out = outs[name] = tmp_path / f"{name}.mkv"
        assert main(["sync", str(clip), "--audio", str(dub), "--backend", "musetalk",
                     "--stabilizer", name, "--range", f"{edited[0]}-{edited[1]}",
                     "--codec", "ffv1", "-o", str(out)]) == 0
    analysis = analyze_range(clip)
    boxes = crop_boxes(analysis.landmarks, analysis.boxes, *SIZE, EXTRA_MARGIN["v15"])
    assert encoded["geometric"].keys() == encoded["liveportrait"].keys()
    assert len(encoded["geometric"]) == 10
    for t, plain in encoded["geometric"].items():
        k = int(np.argmin(np.abs(analysis.times - t)))
        x0, y0, x1, y1 = boxes[k]
        scale = np.array([256 / (x1 - x0), 256 / (y1 - y0)])
        lm = (analysis.landmarks[k] - (x0, y0)) * scale + (scale - 1) / 2
        hull = np.zeros((256, 256), np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(lm).astype(np.int32)), 1)
        diff = np.abs(encoded["liveportrait"][t].astype(int) - plain).max(2)
        # The same crop, re-rendered inside the face: the mouth (upper and lower lip) differs,
        # pixels off the face are the crop's own.
        assert not diff[cv2.dilate(hull, np.ones((3, 3), np.uint8)) == 0].any(), f"t={t}"
        mx, my = np.round(lm[62]).astype(int)
        assert diff[my - 4:my + 5, mx - 4:mx + 5].mean() > 5, f"t={t}"
    edited_frames_change_only_in_mask(clip, outs["liveportrait"], edited)
    # What MuseTalk drew from the neutralised faces is not the geometric run's, on every frame
    # of the range (outside it both are the source).
    frames = {name: [planes_from_av(f)[0] for f in decode_all(out)] for name, out in outs.items()}
    assert sum(bool((a != b).any()) for a, b in zip(frames["geometric"],
                                                    frames["liveportrait"])) == 10
