"""Phone footage: a rotated clip re-syncs exactly like the upright one, with a single jaw line.

Phones store portrait video on its side with a display matrix that turns it upright. The test
clips are a stretch of talk_d12 around frame 45 (where the head swings and laughs), cropped to
a non-square picture and written losslessly (FFV1) once upright and once turned as a phone
stores it, so both decode to the same upright pixels and must re-sync to the same result.
"""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engine.lipsync.retrieval import even_box
from engine.lipsync.warp import CHIN_RISE, warp_lower_face
from engine.mask import face_down, face_scale, landmark_mask
from engine.media.audio import read_audio
from engine.media.frame import Frame, av_from_planes, planes_from_av
from engine.media.probe import probe
from engine.media.reader import VideoReader
from engine.pipeline import SyncSettings, prepare_sync, sync
from engine.render import ExportSettings
from tests.conftest import shared_clip

FIRST, STOP = 20, 100  # talk_d12 frames of the stretch (25 fps)
ROWS = (40, 488)  # picture rows kept: 512x448 upright, so a width/height mix-up shows


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("rotated-sync-cache")


@pytest.fixture(autouse=True)
def _shared_cache(cache, monkeypatch):
    # One face analysis per clip serves every test here.
    monkeypatch.setenv("REDUB_CACHE_DIR", str(cache))


@pytest.fixture(scope="module")
def dub():
    return shared_clip("speech_radio31_16k.wav")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Upright and phone-rotated copies of the stretch, by display rotation."""
    src = shared_clip("talk_d12_512.mp4")
    folder = tmp_path_factory.mktemp("rotated-clips")
    return {rotation: _stretch(src, folder / f"d12_rot{rotation}.mkv", rotation)
            for rotation in (0, 90, 270)}


def _stretch(src: Path, dst: Path, rotation: int) -> Path:
    """Frames FIRST..STOP of ``src`` with their sound; stored turned clockwise by ``rotation``
    (4:2:0 planes turned losslessly) with a display matrix turning them back."""
    turns = rotation // 90
    with av.open(str(src)) as container:
        pictures = [planes_from_av(f) for i, f in zip(range(STOP), container.decode(video=0))
                    if i >= FIRST]
    sound = read_audio(src, start=FIRST / 25, duration=(STOP - FIRST) / 25)
    out = av.open(str(dst), "w")
    video = out.add_stream("ffv1", rate=25)
    stored = [tuple(np.ascontiguousarray(np.rot90(plane[ROWS[0] // s: ROWS[1] // s], -turns))
                    for plane, s in zip(planes, (1, 2, 2))) for planes in pictures]
    video.height, video.width = stored[0][0].shape
    video.pix_fmt = "yuv420p"
    if rotation:
        video.set_display_rotation(rotation)
    audio = out.add_stream("pcm_s16le", rate=sound.rate)
    audio.layout = "stereo" if sound.samples.shape[1] == 2 else "mono"
    for i, planes in enumerate(stored):
        frame = av_from_planes(planes, "yuv420p", video.width, video.height)
        frame.pts = i
        out.mux(video.encode(frame))
    out.mux(video.encode())
    pcm = (np.clip(sound.samples, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
    block = av.AudioFrame.from_ndarray(pcm, format="s16", layout=audio.layout.name)
    block.sample_rate, block.pts = sound.rate, 0
    out.mux(audio.encode(block))
    out.mux(audio.encode())
    out.close()
    return dst


@pytest.mark.parametrize("rotation", [90, 270])
def test_a_rotated_clip_resyncs_exactly_like_the_upright_one(tmp_path, clips, dub, rotation):
    results = {}
    for turn in (0, rotation):
        out = sync(clips[turn], dub, ExportSettings(output=str(tmp_path / f"{turn}.mkv"),
                                                    codec="ffv1"))
        results[turn] = out.path
    video = probe(results[rotation]).video[0]
    # Written back as the phone stored it: on its side, with the same display matrix.
    assert (video.rotation, video.width, video.height) == (rotation, 512, 448)
    assert (video.coded_width, video.coded_height) == (448, 512)
    with VideoReader(results[0]) as upright, VideoReader(results[rotation]) as turned, \
            VideoReader(clips[0]) as source:
        assert turned.info.frame_count == upright.info.frame_count == STOP - FIRST
        changed = 0
        for i in range(STOP - FIRST):
            a, b = upright.frame(i), turned.frame(i)
            for pa, pb in zip(a.planes, b.planes):
                np.testing.assert_array_equal(pa, pb, err_msg=f"frame {i}")
            changed += not np.array_equal(a.planes[0], source.frame(i).planes[0])
    assert changed >= 20  # the stretch was re-synced, not passed through


def test_the_new_mouth_stays_inside_the_target_jaw(clips, dub):
    # A donor chin pasted below the target's is a second jaw line: the edit must stay inside
    # the target's own lower-face mask, except under the chin, where a chin that rises covers
    # the target's chin contour with the donor's neck, fading out a feather below it.
    session = prepare_sync(clips[0], dub)
    mask_settings = SyncSettings().mask
    under_reach = mask_settings.feather  # the soft edge, on the neck
    covered = 0
    try:
        edited = session.edited_frames()
        assert len(edited) >= 20
        a = session.analysis
        with VideoReader(clips[0]) as reader:
            for i in edited:
                frame = reader.frame(int(i))
                out = session.render_frame(frame)
                box = (0, 0, frame.width, frame.height)
                mask = landmark_mask(a.landmarks[i - a.start], box, mask_settings)
                target = a.landmarks[i - a.start]
                chin = target[5:12]
                below = chin + under_reach * face_scale(target) * face_down(
                    a.transforms[i - a.start])
                under = np.zeros(mask.shape, np.uint8)
                cv2.fillPoly(under, [np.round(np.vstack([chin, below[::-1]])).astype(np.int32)],
                             1)
                # 4:2:0 chroma reaches one pixel past the mask's last changed pixel.
                reach = cv2.dilate(((mask > 0) | (under > 0)).astype(np.uint8),
                                   np.ones((5, 5), np.uint8)) > 0
                changed = np.abs(out.rgb().astype(np.int16) - frame.rgb()).max(2) > 0
                assert changed.any(), f"frame {i} not re-synced"
                outside = int((changed & ~reach).sum())
                assert outside == 0, f"frame {i}: {outside} pixels changed outside the jaw"
                covered += bool((changed & (under > 0) & (mask == 0)).any())
    finally:
        session.close()
    assert covered > 0  # some donor chins rise, and the target's chin under them is covered


def test_the_donor_jaw_lands_on_the_target_jaw_without_folds(clips, dub):
    session = prepare_sync(clips[0], dub)  # the analysis, and which frames it re-syncs
    try:
        a, edited = session.analysis, session.edited_frames() - session.analysis.start
    finally:
        session.close()
    width, height = 512, 448
    # A donor whose pixels say where they come from: x / 2 in red, y / 2 in green.
    ys, xs = np.mgrid[0:height, 0:width]
    ramp = np.stack([xs // 2, ys // 2, np.zeros_like(xs)], -1).astype(np.uint8)
    donor = Frame(index=0, time=0.0, pts=0, pix_fmt="rgb24", width=width, height=height,
                  planes=(ramp,))
    # The most closed and the most open mouths lend to every frame: chins far above and below.
    found = np.flatnonzero(a.found)
    gap = np.array([np.linalg.norm(lm[66] - lm[62]) / face_scale(lm)
                    for lm in a.landmarks[found]])
    lenders = found[[int(np.argmin(gap)), int(np.argmax(gap))]]
    step = 8  # finite differences over 2 * step pixels: the ramp's 2-pixel steps stay small
    for k in edited:
        target = a.landmarks[k]
        box = even_box(a.crop_boxes[k], width, height)
        inside = landmark_mask(target, box, SyncSettings().mask)[step:-step, step:-step] > 0
        jaw = np.round(target[:17] - box[:2]).astype(int)
        on_crop = ((jaw >= 0) & (jaw < [box[2] - box[0], box[3] - box[1]])).all(1)
        for d in lenders:
            crop, drawn = warp_lower_face(donor, a.landmarks[d], a.transforms[d], target,
                                          a.transforms[k], box, box)
            src_x, src_y = 2.0 * crop[..., 0], 2.0 * crop[..., 1]
            # Where each output pixel was read in the donor: the Jacobian of that map must
            # stay positive (a fold shows the same donor contour twice).
            dxx, dyx = (c[step:-step, 2 * step:] - c[step:-step, : -2 * step]
                        for c in (src_x, src_y))
            dxy, dyy = (c[2 * step:, step:-step] - c[: -2 * step, step:-step]
                        for c in (src_x, src_y))
            det = (dxx * dyy - dxy * dyx) / (2 * step) ** 2
            assert det[inside].min() > 0.15, f"frame {k}, donor {d}: the warp folds"
            # The donor's jaw line is drawn on the target's, not beside it, except that its chin
            # may stay higher (by at most CHIN_RISE face sizes, straight up the face).
            offset = (target[:17] - drawn[:17]) / face_scale(target)
            up = offset @ face_down(a.transforms[k])
            assert np.abs(offset - up[:, None] * face_down(a.transforms[k])).max() < 1e-6
            assert up.min() > -1e-6 and up.max() < CHIN_RISE + 1e-6
            assert up[np.r_[0:6, 11:17]].max() < 1e-6  # the jaw's sides are pinned
            at = np.round(drawn[:17] - box[:2]).astype(int)
            landed = np.column_stack([src_x[at[on_crop, 1], at[on_crop, 0]],
                                      src_y[at[on_crop, 1], at[on_crop, 0]]])
            miss = np.linalg.norm(landed - a.landmarks[d][:17][on_crop], axis=1).max()
            assert miss < 0.08 * face_scale(target), f"frame {k}, donor {d}: jaw {miss:.1f} px off"
