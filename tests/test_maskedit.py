"""Manual corrections: keyframe interpolation, curves, affected frames, storage, and their effect
on the rendered pixels through a prepared sync session."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.curves import Curve, MotionCurves
from engine.errors import UsageError
from engine.face import geometry as geo
from engine.mask import LOWER_FACE, frame_mask, landmark_polygon, polygon_mask
from engine.maskedit import KEEP_FADE, Corrections, MaskLayer, ShapeKey, match_shapes
from engine.media.frame import planes_from_av
from engine.media.reader import VideoReader
from engine.pipeline import SyncSettings, prepare_sync, sync
from engine.project import MediaRef, Project, migrate
from engine.render import ExportSettings
from tests.conftest import shared_clip
from tests.media_factory import decode_all

OUTLINE = geo.TEMPLATE_68[LOWER_FACE]


def outline_layer(keys: dict[int, np.ndarray | None]) -> MaskLayer:
    return MaskLayer("outline", {f: ShapeKey(p) for f, p in keys.items()})


# -- curves -----------------------------------------------------------------------------

def test_curve_passes_through_keys_without_overshoot_and_holds_outside():
    curve = Curve({10: 1.0, 20: 1.5, 30: 1.5, 40: 0.5})
    frames = np.arange(0, 51)
    values = curve.values(frames, default=1.0)
    assert values[10] == 1.0 and values[20] == 1.5 and values[40] == 0.5
    assert (values[:11] == 1.0).all() and (values[40:] == 0.5).all()
    assert values.min() >= 0.5 - 1e-12 and values.max() <= 1.5 + 1e-12  # no overshoot
    assert np.allclose(values[20:31], 1.5)  # flat between equal keys
    assert (np.diff(values[10:21]) > 0).all() and (np.diff(values[30:41]) < 0).all()
    # Smooth: no kink at the interior key 20 (slope 0 there, on both sides).
    assert abs(values[21] - values[20]) < 0.02 and abs(values[19] - values[20]) < 0.02
    assert (Curve().values(frames, 1.3) == 1.3).all()
    assert Curve({5: 2.0}).value_at(100, 1.0) == 2.0
    with pytest.raises(UsageError):
        Curve({1: float("nan")})


# -- interpolation ----------------------------------------------------------------------

def test_interpolation_between_two_keys_is_smooth():
    a = OUTLINE
    b = OUTLINE + [0.0, 0.1]  # the whole outline 0.1 face units lower
    layer = outline_layer({10: a, 20: b})
    shapes = np.stack([layer.at(f).points for f in range(10, 21)])
    np.testing.assert_array_equal(shapes[0], a)
    np.testing.assert_array_equal(shapes[-1], b)
    steps = np.diff(shapes[:, :, 1], axis=0)
    np.testing.assert_allclose(steps, 0.01, atol=1e-12)  # even steps: no jump anywhere
    # Holds beyond the keys.
    np.testing.assert_array_equal(layer.at(0).points, a)
    np.testing.assert_array_equal(layer.at(99).points, b)


def test_shapes_with_different_vertex_counts_keep_their_vertices():
    square = np.array([(0, 0), (1, 0), (1, 1), (0, 1)], float)
    # The same square with a vertex inserted on an edge, numbered from another corner.
    more = np.array([(1, 1), (0, 1), (0, 0), (0.5, 0), (1, 0)], float) + [0.0, 1.0]
    a, b = match_shapes(square, more)
    assert len(a) == len(b) >= 5
    for vertex in square:  # every vertex of each is still there, exactly
        assert np.isclose(a, vertex).all(1).any()
    for vertex in more:
        assert np.isclose(b, vertex).all(1).any()
    np.testing.assert_allclose(b - a, [[0.0, 1.0]] * len(a), atol=1e-9)  # matched point to point


def test_automatic_keys_blend_into_the_frame_outline():
    edited = OUTLINE + [0.0, 0.2]
    layer = outline_layer({0: edited, 10: None})
    auto = OUTLINE + [0.05, 0.0]
    np.testing.assert_allclose(layer.at(5, lambda: auto).points, (edited + auto) / 2)
    assert layer.at(10).points is None and layer.at(30).points is None


def test_exclusions_and_strokes_act_between_their_first_and_last_key_only():
    hand = np.array([(0.4, 0.8), (0.6, 0.8), (0.6, 1.0), (0.4, 1.0)])
    c = Corrections()
    hid = c.add_shape("exclude", 10, hand)
    c.copy_key(hid, 10, 10, 20)
    sid = c.add_shape("erase", 15, np.array([(0.45, 0.9), (0.55, 0.9)]), radius=0.03)
    assert c.at(9).overrides == () and c.at(21).overrides == ()
    at15 = c.at(15).overrides
    assert [o.mode for o in at15] == ["erase", "exclude"]  # exclusions apply last
    assert at15[0].radius == 0.03 and c.at(16).overrides[0].mode == "exclude"
    c.delete_key(sid, 15)
    with pytest.raises(KeyError):
        c.layer(sid)


def test_changed_frames_are_only_those_an_edit_reaches():
    frames = np.arange(100)
    base = Corrections([outline_layer({20: OUTLINE, 60: OUTLINE + [0, 0.05]})])
    moved = base.copy()
    moved.set_outline(40, OUTLINE + [0, 0.1])  # a key between the two
    np.testing.assert_array_equal(moved.changed_frames(base, frames), np.arange(21, 60))
    hand = np.array([(0.4, 0.8), (0.6, 0.8), (0.5, 1.0)])
    excluded = base.copy()
    hid = excluded.add_shape("exclude", 70, hand)
    excluded.copy_key(hid, 70, 70, 75)
    np.testing.assert_array_equal(excluded.changed_frames(base, frames), np.arange(70, 76))
    kept = base.copy()
    kept.set_keep(50, 52)
    np.testing.assert_array_equal(kept.changed_frames(base, frames),
                                  np.arange(50 - KEEP_FADE, 53 + KEEP_FADE))
    assert kept.keep_weight(51) == 1.0 and 0 < kept.keep_weight(53) < 1
    assert kept.keep_weight(53 + KEEP_FADE) == 0.0
    assert base.copy().changed_frames(base, frames).size == 0


def test_key_edits_reset_and_keep_spans():
    c = Corrections()
    c.set_outline(5, OUTLINE, dilation=0.02)
    c.set_outline(9, OUTLINE + 0.01)  # keeps the dilation the frame had
    layer = c.outline()
    assert layer.keys[9].dilation == 0.02
    c.move_key(layer.id, 9, 12)
    assert layer.frames == [5, 12]
    c.reset_to_automatic(layer.id, [5])
    assert layer.keys[5].points is None
    c.reset_to_automatic(layer.id, [12])
    assert c.outline() is None  # automatic everywhere again
    c.set_keep(10, 20)
    c.set_keep(18, 30)  # overlaps: merged
    c.set_keep(40, 35)
    assert c.keep == [(10, 30), (35, 40)]
    c.delete_keep(0)
    assert c.keep == [(35, 40)]


def test_corrections_round_trip_through_a_project_file(tmp_path):
    c = Corrections(keep=[(3, 8)],
                    curves=MotionCurves(openness_gain=Curve({1: 0.5, 9: 1.25}),
                                        audio_offset_ms=Curve({4: -40.0})))
    c.set_outline(2, OUTLINE + 0.5 / 3, feather=0.2)
    c.add_shape("add", 7, np.array([(0.1, 0.2), (0.3, 0.25)]), radius=0.04)
    project = Project(MediaRef("/clip.mp4"), corrections=c)
    project.save(tmp_path / "p.redub")
    again = Project.load(tmp_path / "p.redub")
    assert again.corrections == c
    np.testing.assert_array_equal(again.corrections.outline().keys[2].points, OUTLINE + 0.5 / 3)


def test_version_1_mask_edits_migrate_to_layers():
    v1 = {"format": "redub-project", "version": 1, "media": {"path": "/a.mp4"},
          "mask_edits": {"4": [{"points": [[0, 0], [1, 0], [0, 1]], "mode": "replace"},
                               {"points": [[0, 0], [2, 0], [0, 2]], "mode": "exclude"}]}}
    project = Project.from_dict(migrate(json.loads(json.dumps(v1))))
    roles = [l.role for l in project.corrections.layers]
    assert roles == ["outline", "exclude"]
    assert project.corrections.outline().frames == [4]


# -- rendered pixels ----------------------------------------------------------------------

CLIP_RANGE = (4.2, 6.36)  # talk_d12 frames 105-158: the head moves, landmarks on the face


@pytest.fixture(scope="module")
def clip():
    return shared_clip("talk_d12_512.mp4")


@pytest.fixture(scope="module")
def session(clip):
    dub = shared_clip("speech_radio31_16k.wav")
    s = prepare_sync(clip, dub, ranges=[CLIP_RANGE],
                     settings=SyncSettings(train_range=CLIP_RANGE))
    yield s
    s.close()


@pytest.fixture(scope="module")
def frames(clip):
    with VideoReader(clip) as reader:
        yield {i: reader.frame(i) for i in (110, 120, 135)}


def luma(frame) -> np.ndarray:
    return frame.planes[0].astype(np.int16)


def render(session, frame, corrections) -> np.ndarray:
    session.set_corrections(corrections)
    return luma(session.render_frame(frame))


def face(session, index):
    a = session.analysis
    k = index - a.start
    return a.landmarks[k], a.transforms[k]


def test_a_dragged_vertex_changes_the_mask_there(session, frames):
    frame = frames[120]
    lm, to_face = face(session, 120)
    auto = render(session, frame, Corrections())
    outline = geo.apply(to_face, landmark_polygon(lm, "lower_face"))
    chin = 5  # LOWER_FACE[5] is landmark 8, the chin
    pulled = outline.copy()
    pulled[chin, 1] += 0.25  # far below the chin
    c = Corrections()
    c.set_outline(120, pulled)
    edited = render(session, frame, c)
    diff = edited != auto
    # The picture changes below the old chin, where the outline now reaches ...
    below = geo.apply(geo.invert(to_face),
                      ((pulled[chin] + outline[chin]) / 2 + [0, 0.04])[None])[0]
    bx, by = np.round(below).astype(int)
    assert diff[by - 3:by + 4, bx - 3:bx + 4].any()
    source = luma(frame)
    assert (edited[by - 3:by + 4, bx - 3:bx + 4] != source[by - 3:by + 4, bx - 3:bx + 4]).any()
    # ... and nowhere near the other side of the face.
    ys, xs = np.nonzero(diff)
    assert ys.min() > lm[30, 1]  # nothing above the nose tip


def test_a_correction_follows_the_moving_face(session, frames):
    lm_a, face_a = face(session, 110)
    lm_b, face_b = face(session, 135)
    # The head moves between the two frames.
    assert np.linalg.norm(lm_a[30] - lm_b[30]) > 8
    cheek = np.array([0.70, 0.64])  # face coordinates: the right cheek, outside the mask
    c = Corrections()
    sid = c.add_shape("add", 110, np.array([cheek - [0.03, 0], cheek + [0.03, 0]]), radius=0.04)
    c.copy_key(sid, 110, 110, 135)
    source = luma(frames[135])
    auto = render(session, frames[135], Corrections())
    edited = render(session, frames[135], c)
    # Pixels the stroke alone changed (the automatic mask leaves them as they were).
    assert np.count_nonzero((edited != source) & (auto == source)) > 50
    # Where the stroke widens the mask (its picture depends on the chosen source mouth, so the
    # mask says where, not the pixels).
    k = 135 - session.analysis.start
    box = tuple(int(v) for v in session.analysis.crop_boxes[k])
    fixes = c.at(135, lambda: geo.apply(face_b, landmark_polygon(lm_b, "lower_face")))
    added = (frame_mask(lm_b, box, face_b, session.settings.mask, fixes.overrides)
             - frame_mask(lm_b, box, face_b, session.settings.mask))
    ys, xs = np.nonzero(added > 0.5)
    assert ys.size > 50
    centre = np.array([xs.mean(), ys.mean()]) + box[:2]
    expected = geo.apply(geo.invert(face_b), cheek[None])[0]  # on frame 135's cheek ...
    drawn_at = geo.apply(geo.invert(face_a), cheek[None])[0]  # ... not where it was drawn
    assert np.linalg.norm(centre - expected) < 4
    assert np.linalg.norm(drawn_at - expected) > 8


def test_an_exclusion_keeps_source_pixels(session, frames):
    frame = frames[120]
    lm, to_face = face(session, 120)
    mouth = geo.apply(to_face, lm[48:68]).mean(0)
    hand = mouth + 0.08 * np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)])
    c = Corrections()
    c.add_shape("exclude", 120, hand)
    auto = render(session, frame, Corrections())
    edited = render(session, frame, c)
    source = luma(frame)
    # Pixels a pixel or more inside the drawn square.
    inside = polygon_mask(geo.apply(geo.invert(to_face), hand), source.shape, -1.0, 0.0) > 0
    assert inside.sum() > 1000
    assert (auto[inside] != source[inside]).mean() > 0.5  # the mouth was re-synced there
    np.testing.assert_array_equal(edited[inside], source[inside])


def test_keep_original_spans_and_curves(session, frames, clip):
    c = Corrections(keep=[(118, 122)])
    changed = session.set_corrections(c)
    assert set(changed.tolist()) == set(range(118 - KEEP_FADE, 123 + KEEP_FADE))
    np.testing.assert_array_equal(luma(session.render_frame(frames[120])), luma(frames[120]))
    # A curve closing the mouth over part of the range re-plans only where the plan changes.
    closed = Corrections(keep=[(118, 122)], curves=MotionCurves(openness_gain=Curve({130: 0.0})))
    replanned = session.set_corrections(closed)
    assert replanned.size and set(replanned.tolist()) <= set(session.edited_frames().tolist())
    session.set_corrections(Corrections())


def test_export_applies_the_corrections(tmp_path, clip):
    dub = shared_clip("speech_radio31_16k.wav")
    c = Corrections(keep=[(110, 114)])
    out = sync(clip, dub, ExportSettings(output=str(tmp_path / "o.mkv"), codec="ffv1"),
               ranges=[(4.4, 4.8)], settings=SyncSettings(train_range=CLIP_RANGE),
               corrections=c)
    src, res = decode_all(clip), decode_all(out.path)
    same = [np.array_equal(planes_from_av(src[i])[0], planes_from_av(res[i])[0])
            for i in range(110, 120)]
    assert same[:5] == [True] * 5  # kept
    assert not all(same[5 + KEEP_FADE:])  # re-synced after the fade
