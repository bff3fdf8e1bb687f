"""SieveSync: the FFHQ-style quad and its steadiness, the way back into the frame, the refusal
of faceless ranges, the denoised dub, and ``redub sync --backend sievesync`` end to end on tiny
random networks in the public contracts."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import soundfile as sf

from engine.audio import SAMPLE_RATE
from engine.audio.denoise import denoise
from engine.cli import main
from engine.errors import RedubError
from engine.face import face_quad as fq
from engine.face import geometry as geo
from engine.face.analysis import AnalysisSettings, Flag, _smooth_run, analyze_range
from engine.lipsync.backend import SyncContext
from engine.lipsync.musetalk import MuseTalkGenerator
from engine.lipsync.sievesync import SieveSyncGenerator, restore_strength
from engine.media.audio import read_audio
from engine.media.reader import VideoReader
from tests.conftest import shared_clip
from tests.generator_harness import edited_frames_change_only_in_mask
from tests.face_clip import SIZE, write_face_clip
from tests.musetalk_factory import musetalk_onnx  # noqa: F401
from tests.sievesync_models import install_models


# -- the quad ----------------------------------------------------------------------------------

def _face(eyes=((100, 100), (200, 100)), mouth=((120, 200), (180, 200))) -> np.ndarray:
    """Landmarks whose eye corners sit 10 px either side of ``eyes`` and whose mouth corners
    are ``mouth``."""
    lm = geo.TEMPLATE_68 * 200.0
    (lx, ly), (rx, ry) = eyes
    lm[36], lm[39], lm[42], lm[45] = (lx - 10, ly), (lx + 10, ly), (rx - 10, ry), (rx + 10, ry)
    lm[48], lm[54] = mouth
    return lm


def test_the_quad_is_ffhqs_square_from_the_eye_and_mouth_corners():
    # Eyes 100 px apart, mouth 100 px below them: half side max(2.5 x 100, 2 x 100) = 250,
    # centred a tenth of the way to the mouth.
    quad = fq.quads(_face()[None])[0]
    np.testing.assert_allclose(quad, [(-100, -140), (-100, 360), (400, 360), (400, -140)],
                               atol=1e-9)
    # A turned face turns the quad with it.
    turn = cv2.getRotationMatrix2D((150, 150), 30, 1.0)
    turned = fq.quads(geo.apply(turn, _face())[None])[0]
    np.testing.assert_allclose(turned, geo.apply(turn, quad), atol=1e-9)
    # A long face (mouth far below): the eye-to-mouth distance sets the size.
    long = fq.quads(_face(mouth=((120, 300), (180, 300)))[None])[0]
    assert np.linalg.norm(long[3] - long[0]) == pytest.approx(2 * 2 * 200)
    # The quad's corners land on the aligned picture's, as the public code's perspective
    # transform puts them.
    matrix = fq.quad_matrix(turned)
    np.testing.assert_allclose(geo.apply(matrix, turned), [(0, 0), (0, 511), (511, 511),
                                                           (511, 0)], atol=1e-9)
    public = cv2.getPerspectiveTransform(turned.astype(np.float32),
                                         np.float32([(0, 0), (0, 511), (511, 511), (511, 0)]))
    np.testing.assert_allclose(matrix, public[:2] / public[2, 2], atol=1e-4)


def _aligned_motion(frames: list[np.ndarray], matrices: np.ndarray) -> np.ndarray:
    """Median optical flow (px per frame) of the aligned eyes and nose between frames."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grey = [np.ascontiguousarray(cv2.cvtColor(fq.align(f, (0, 0), m),
                                              cv2.COLOR_RGB2GRAY)[150:300, 150:362])
            for f, m in zip(frames, matrices)]
    return np.array([np.linalg.norm(np.median(dis.calc(a, b, None).reshape(-1, 2), 0))
                     for a, b in zip(grey, grey[1:])])


def test_a_still_head_stays_still_and_a_moving_one_is_followed():
    clip = shared_clip("hdtf_aoc_512.mp4")
    analysis = analyze_range(clip, 5.0, 7.6)
    with VideoReader(clip) as reader:
        frames = [np.array(reader.frame(analysis.start + i).rgb()) for i in range(len(analysis))]
    matrices = fq.quad_matrix(fq.quads(analysis.landmarks))
    moved = _aligned_motion(frames, matrices)
    # The stillest 20 frames by the head's own motion in the picture.
    centre = geo.apply(geo.invert(analysis.transforms), np.array([[0.5, 0.5]]))[:, 0]
    head = np.convolve(np.linalg.norm(np.diff(centre, axis=0), axis=1), np.ones(19), "valid")
    still = int(np.argmin(head))
    assert moved[still:still + 19].mean() < 0.5
    # Over the whole stretch (the head nods) the aligned face moves less than a fixed crop.
    fixed = _aligned_motion(frames, np.broadcast_to(matrices[0], matrices.shape))
    assert moved.mean() < 0.75 * fixed.mean()


def test_a_moving_head_is_followed_with_less_than_a_frame_of_lag():
    # A head that moves 4.5 px per frame for 30 frames, then stops; dlib-like jitter; smoothed
    # as the analysis smooths landmarks.
    speed = np.zeros(60)
    speed[10:40] = 4.0
    path = np.cumsum(speed)
    true = geo.TEMPLATE_68 * 150 + (100, 80) + np.stack([path, path / 2], 1)[:, None]
    raw = true + np.random.default_rng(0).normal(0, 0.7, true.shape)
    smoothed = _smooth_run(raw, 25.0, AnalysisSettings())
    followed = fq.quads(smoothed).mean(1)[:, 0]
    truth = fq.quads(true).mean(1)[:, 0]
    frames = np.arange(60.0)
    shifts = np.arange(-2.0, 2.01, 0.1)
    errors = [np.abs(followed - np.interp(frames - s, frames, truth)).mean() for s in shifts]
    lag = shifts[int(np.argmin(errors))]
    assert abs(lag) <= 1.0
    # Frame by frame while it moves: behind or ahead by under a frame's travel.
    assert (np.abs(followed - truth)[12:39] < 4.0).all()


# -- back into the frame ---------------------------------------------------------------------

def test_unalign_changes_only_pixels_inside_the_face_hull_of_the_box():
    rng = np.random.default_rng(1)
    lm = geo.TEMPLATE_68 * 160 + (60, 40)
    frame = rng.integers(0, 256, (300, 280, 3), np.uint8)
    matrix = fq.quad_matrix(fq.quads(lm[None])[0])
    aligned = fq.align(frame, (0, 0), matrix)
    # The generator's face: darker and redder, with a new mouth drawn in.
    generated = cv2.add(aligned, (40, -30, -30, 0))
    mouth = fq.aligned_landmarks(matrix, lm[48:60]).astype(np.int32)
    cv2.fillPoly(generated, [mouth], (20, 0, 0))
    box = (70, 120, 230, 260)  # the pipeline's region: lower face, cut by the hull's side
    source = frame[box[1]:box[3], box[0]:box[2]]
    out = fq.unalign(generated, matrix, source, box, lm)
    mask = fq.hull_mask(lm, box)
    changed = np.any(out != source, axis=2)
    assert changed.any() and not (changed & (mask <= 0)).any()
    hull = cv2.convexHull(np.round(lm - box[:2]).astype(np.int32))
    inside = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(inside, hull, 1)
    inside = cv2.dilate(inside, np.ones((3, 3), np.uint8))  # the hull's sub-pixel edge
    assert not (mask[inside == 0] > 0).any()
    # The colour cast is gone: histograms were matched to the source inside the hull.
    inner = mask >= 1.0
    cast = np.abs(out[inner].mean(0) - source[inner].mean(0))
    assert cast.max() < 8.0


def test_histogram_matching_maps_one_distribution_onto_the_other():
    rng = np.random.default_rng(2)
    reference = rng.normal(120, 30, (64, 64, 3)).clip(0, 255).astype(np.uint8)
    image = (reference.astype(np.float32) * 0.5 + 90).astype(np.uint8)[:, ::-1]
    where = np.ones((64, 64), bool)
    where[:8] = False
    matched = fq.match_histograms(image, reference, where)
    for c in range(3):
        q = np.linspace(5, 95, 10)
        np.testing.assert_allclose(np.percentile(matched[..., c][where], q),
                                   np.percentile(reference[..., c][where], q), atol=2.5)
        # The extremes go to the reference's, not to the ends of the scale.
        assert matched[..., c][where].max() == reference[..., c][where].max()
        assert matched[..., c][where].min() == reference[..., c][where].min()
    assert np.array_equal(fq.match_histograms(image, reference, np.zeros_like(where)), image)


def test_codeformer_strength_follows_the_public_face_size_rule():
    assert restore_strength(1.0) == 0.75 and restore_strength(12.0) == 0.6
    assert restore_strength(6.0) == pytest.approx(0.675)


# -- refusal -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_face_clip(tmp_path_factory.mktemp("sievesync-clip") / "face.mp4", frames=30)


def test_a_range_mostly_without_a_face_is_refused_in_one_line(clip):
    fq.refuse_faceless(np.r_[np.ones(6, bool), np.zeros(4, bool)], "x.mp4")  # 40%: accepted
    analysis = analyze_range(clip)
    flags = analysis.flags.copy()
    flags[: int(len(flags) * 0.45)] |= np.uint8(Flag.NOT_FOUND)
    ctx = SyncContext(video=str(clip), analysis=replace(analysis, flags=flags),
                      source_audio=None, dub_audio=None, edit=np.ones(len(analysis), bool),
                      train=np.ones(len(analysis), bool), fps=analysis.fps,
                      dub_samples=np.zeros(16000, np.float32))
    with pytest.raises(RedubError) as caught:
        SieveSyncGenerator(neutralise=False).prepare(ctx)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(clip))
    assert f"{int(len(flags) * 0.45)} of {len(flags)} frames" in message


# -- the dub -------------------------------------------------------------------------------------

def _noisy(dub):
    speech = read_audio(dub, rate=SAMPLE_RATE, channels=1).samples[:, 0]
    noise = np.random.default_rng(3).normal(0, 0.02, speech.shape).astype(np.float32)
    return speech, speech + noise


def test_denoise_gates_the_noise_and_keeps_the_speech():
    speech, noisy = _noisy(shared_clip("speech_radio31_16k.wav"))
    clean = denoise(noisy[:, None])
    assert clean.shape == (len(noisy), 1) and clean.dtype == np.float32
    pauses = np.convolve(np.abs(speech), np.ones(1600) / 1600, "same") < 0.005
    assert clean[pauses, 0].std() < noisy[pauses].std() / 10  # over 20 dB quieter
    assert np.corrcoef(clean[~pauses, 0], speech[~pauses])[0, 1] > 0.8
    assert not np.any(denoise(np.zeros(800, np.float32)))


# -- end to end --------------------------------------------------------------------------------

def test_sync_with_sievesync_changes_only_masked_pixels(musetalk_onnx, clip, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("REDUB_MODELS_DIR", str(tmp_path / "models"))
    install_models(musetalk_onnx, tmp_path)
    # A noisy dub: the generator hears it denoised, the export sounds as delivered.
    speech, noisy = _noisy(shared_clip("speech_radio31_16k.wav"))
    dub = tmp_path / "noisy.wav"
    sf.write(str(dub), noisy, SAMPLE_RATE, subtype="FLOAT")
    heard = []
    listen = MuseTalkGenerator.listen
    monkeypatch.setattr(MuseTalkGenerator, "listen",
                        lambda self, samples, times: heard.append(samples)
                        or listen(self, samples, times))
    out = tmp_path / "synced.mkv"
    edited = (0.4, 0.8)
    code = main(["sync", str(clip), "--audio", str(dub), "--backend", "sievesync",
                 "--range", f"{edited[0]}-{edited[1]}", "--codec", "ffv1", "-o", str(out)])
    assert code == 0
    np.testing.assert_array_equal(heard[0], denoise(noisy[:, None]))

    changed = edited_frames_change_only_in_mask(clip, out, edited)
    assert len(changed) == 10  # every frame of the range

    inside = dict(start=edited[0], duration=edited[1] - edited[0], rate=SAMPLE_RATE, channels=1)
    exported = read_audio(out, **inside).samples[:, 0]
    delivered = read_audio(dub, **inside).samples[:, 0]
    assert np.corrcoef(exported, delivered)[0, 1] > 0.99
