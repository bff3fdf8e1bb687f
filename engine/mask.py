"""Soft masks saying where a generated mouth replaces the original picture.

A mask lives inside a crop box ``(x0, y0, x1, y1)`` of the frame (``x1``/``y1`` exclusive): it
has the crop's shape, float32 in [0, 1], exactly 0 far outside the region and exactly 1 well
inside it. Points are in frame pixels with integer coordinates at pixel centres, so crop pixel
``[i, j]`` sits at frame point ``(x0 + j, y0 + i)``.

Shapes come from 68-point landmarks (iBUG 300-W layout) and are rendered through an exact signed
distance to the polygon rather than a rasterised outline: the soft edge then moves smoothly with
sub-pixel landmark motion instead of stepping a pixel at a time, which would flicker in video.

Sizes (dilation, feather, the lips margin) are fractions of :func:`face_scale`, so one setting
looks the same on a close-up and a wide shot.

Per-frame overrides are polygons (or brush strokes) the user draws, stored in the canonical
face frame of the face-analysis module (``to_face``: a 2x3 affine, frame pixels -> face
coordinates) so a shape drawn on one frame follows the head on the next. An edited outline, in
the same coordinates, stands in for the landmark outline and keeps its dilation and feather.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, get_args

import cv2
import numpy as np

from engine.errors import UsageError
from engine.face import geometry as geo

# "parsing": the face-parsing mask (engine.face_parsing), drawn from the picture; where a
# landmark outline stands for it (the region, the editor, restorers) it is the lower face's.
# "mouth": the mouth and lips parsed in the picture (engine.mouth_parsing); its landmark
# outline is the lips'.
MaskKind = Literal["lower_face", "lips", "parsing", "mouth"]
MASK_KINDS: tuple[str, ...] = get_args(MaskKind)
OverrideMode = Literal["replace", "exclude", "add", "erase"]
Box = tuple[int, int, int, int]

# Lower face: the jaw line from cheek to cheek through the chin (3..13; the points above climb to
# the ears, where the face's outline meets hair, earrings and background), then back along the
# base of the nose (35..31): the part of the face that moves with speech.
LOWER_FACE = np.r_[3:14, 35:30:-1]
OUTER_LIPS = np.arange(48, 60)
# Margin around the outer lip contour of the lips mask: room for the new lips to move a little
# past the old ones, while the soft edge still stops short of the nose (the upper lip is about a
# quarter of an inter-ocular distance below it).
LIPS_MARGIN = 0.08
# The mouth mask's margin around the parsed mouth (or the lips outline standing for it): wider,
# so that with the default feather the whole new mouth is replaced, lip edges included, and
# the soft edge lies on the skin around it.
MOUTH_MARGIN = 0.15
MARGINS = {"lips": LIPS_MARGIN, "mouth": MOUTH_MARGIN}
# Where a generated chin is higher than the target's, the blend is whole down to the target's
# chin (jaw points 4..12) and fades out a feather below it, on the neck, hiding the target's
# chin contour; reaching further would bring in more of the donor's neck, which may be its
# collar or the shadow under its chin. Full cover from a rise of CHIN_RISE_FULL face sizes on.
CHIN_JAW = np.arange(4, 13)
# How freely each of those points may rise: the chin, not the jaw's sides, where pushing the
# cover down would reach past the face's outline onto hair or background.
CHIN_WEIGHT = np.array([0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0])
CHIN_RISE_FULL = 0.04
# A landmark mask's distance field is sampled every feather / _COARSE_FEATHER pixels (1 to 4).
_COARSE_FEATHER = 6.0


# The ranges the editor offers for a mask's dilation and feather (fractions of the face size),
# one for every control that sets them.
DILATION_RANGE = (-0.5, 0.5)
FEATHER_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class MaskSettings:
    """How the landmark mask is drawn; sizes are fractions of :func:`face_scale`.

    ``dilation`` moves the edge outwards (negative: inwards); the mask is 0.5 there.
    ``feather`` is the width of the soft edge, centred on it: the mask goes from 1 to 0 over
    that distance with a smoothstep profile (no kink at either end, so no Mach band).
    """

    kind: MaskKind = "lower_face"
    dilation: float = 0.05
    feather: float = 0.15

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise UsageError(f"unknown mask kind {self.kind!r} ({', '.join(MASK_KINDS)})")
        if not np.isfinite(self.dilation) or not np.isfinite(self.feather) or self.feather < 0:
            raise UsageError(f"bad mask sizes: dilation {self.dilation}, feather {self.feather}")


@dataclass(frozen=True, eq=False)
class MaskOverride:
    """A polygon (or brush stroke) drawn by the user on one frame, in canonical face coordinates.

    ``replace``: the polygons are the mask (the landmark mask is ignored); ``add``: they are
    added to it; ``erase``: they are cut out of it, in order with the adds (a later add paints
    over an earlier erase); ``exclude``: they are cut out last, keeping the source pixels there
    whatever else is drawn (a hand in front of the mouth). The drawn outline is honoured
    exactly: replaced/added shapes are fully replaced inside and erased/excluded ones fully
    kept; the frame's feather lies outside the outline.

    With ``radius`` set the points are an open brush stroke of that radius (face units) rather
    than a closed polygon.
    """

    polygon: np.ndarray  # (K, 2) canonical face coordinates
    mode: OverrideMode = "exclude"
    radius: float | None = None

    def __post_init__(self) -> None:
        poly = np.asarray(self.polygon, dtype=np.float64)
        least = 1 if self.radius is not None else 3
        if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < least \
                or not np.isfinite(poly).all():
            raise UsageError(f"mask {'stroke' if least == 1 else 'polygon'} needs at least "
                             f"{least} finite points, got {poly.shape}")
        if self.mode not in ("replace", "exclude", "add", "erase"):
            raise UsageError(f"unknown mask override mode {self.mode!r} "
                             "(replace, exclude, add or erase)")
        if self.radius is not None and not (np.isfinite(self.radius) and self.radius > 0):
            raise UsageError(f"bad brush radius {self.radius}")
        object.__setattr__(self, "polygon", poly)

    @classmethod
    def from_frame(cls, polygon: np.ndarray, to_face: np.ndarray,
                   mode: OverrideMode = "exclude") -> MaskOverride:
        """An override from a polygon drawn in frame pixels on a frame whose face is ``to_face``."""
        points = np.asarray(polygon, np.float64)
        return cls(geo.apply(np.asarray(to_face, np.float64), points), mode)

    def in_crop(self, to_face: np.ndarray, box: Box) -> np.ndarray:
        """The polygon in crop pixels on a frame whose face transform is ``to_face``."""
        return geo.apply(geo.invert(np.asarray(to_face, np.float64)), self.polygon) - box[:2]


def face_scale(landmarks: np.ndarray) -> float:
    """The face's size in pixels: the larger of the inter-ocular and eye-to-mouth distances.

    Each alone shrinks when the head turns (inter-ocular with yaw, eye-to-mouth with pitch);
    the larger stays near the frontal size. On a frontal face it is the eye-to-mouth distance,
    about 1.1 inter-ocular distances. Mouth corners are used, not the lips' centre, so opening
    the mouth does not change the scale.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    left, right = pts[36:42].mean(0), pts[42:48].mean(0)
    mouth = (pts[48] + pts[54]) / 2
    return max(float(np.linalg.norm(right - left)),
               float(np.linalg.norm(mouth - (left + right) / 2)), 1.0)


def face_down(to_face: np.ndarray) -> np.ndarray:
    """Unit vector, in frame pixels, pointing down the face (from the brows to the chin)."""
    down = geo.invert(np.asarray(to_face, np.float64))[:, 1]
    return down / np.linalg.norm(down)


def chin_cover(target: np.ndarray, generated: np.ndarray, to_face: np.ndarray, box: Box,
               settings: MaskSettings = MaskSettings()) -> np.ndarray:
    """What a generated chin drawn higher than the target's adds to the mask (crop ``box``)
    under the target's chin; 0 elsewhere.

    A new chin drawn above the target's leaves the target's own chin contour beside it, at the
    lower-face mask's edge, as a second jaw: this covers it with the generated picture's neck,
    so the soft edge falls on the neck. It grows with the rise; there is none where the
    generated chin is not higher, nor for a lips mask (which leaves the chin).
    """
    if settings.kind != "lower_face":
        return np.zeros(_shape(box), np.float32)
    scale = face_scale(target)
    down = face_down(to_face)
    jaw = np.asarray(target, np.float64)[CHIN_JAW]
    rise = (jaw - np.asarray(generated, np.float64)[CHIN_JAW]) @ down / scale
    t = np.clip(rise / CHIN_RISE_FULL, 0, 1)
    # The target's lower-face mask with its chin lowered so that the mask is 1 down to the
    # chin and 0 a feather below it.
    lower_by = max(settings.feather / 2 - settings.dilation, 0.0) * scale
    depth = CHIN_WEIGHT * t * t * (3 - 2 * t) * lower_by
    if depth.max() <= 0:
        return np.zeros(_shape(box), np.float32)
    lowered = np.array(target, np.float64)
    lowered[CHIN_JAW] += depth[:, None] * down
    cover = landmark_mask(lowered, box, settings)
    cover[cover <= landmark_mask(target, box, settings)] = 0
    return cover


def landmark_polygon(landmarks: np.ndarray, kind: MaskKind) -> np.ndarray:
    """The (K, 2) outline, in frame pixels, that a mask of this kind is drawn around."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {pts.shape}")
    return pts[OUTER_LIPS if kind in ("lips", "mouth") else LOWER_FACE]


def landmark_mask(landmarks: np.ndarray, box: Box,
                  settings: MaskSettings = MaskSettings()) -> np.ndarray:
    """The lower-face or lips mask (per ``settings.kind``) of one face, in the crop ``box``."""
    scale = face_scale(landmarks)
    grow = settings.dilation + MARGINS.get(settings.kind, 0.0)
    poly = landmark_polygon(landmarks, settings.kind) - box[:2]
    return polygon_mask(poly, _shape(box), grow * scale, settings.feather * scale, coarse=True)


def polygon_mask(polygon: np.ndarray, shape: tuple[int, int], offset: float,
                 feather: float, coarse: bool = False) -> np.ndarray:
    """Soft mask (float32, ``shape``) of a polygon in crop pixels.

    The edge is ``offset`` pixels outside the outline (rounded at convex corners) and the mask
    falls from 1 to 0 across it over ``feather`` pixels. Only the polygon's neighbourhood is
    computed; the rest is exactly 0. ``coarse`` allows a distance field sampled every other
    pixel for soft edges (a landmark mask's): not for user-drawn shapes, whose edges must be
    exact (an exclusion keeps every source pixel it covers).
    """
    h, w = shape
    out = np.zeros((h, w), np.float32)
    poly = np.asarray(polygon, dtype=np.float64)
    reach = max(offset + feather / 2, 0.0) + 1
    lo = np.floor(poly.min(0) - reach).astype(int).clip(0, [w, h])
    hi = np.ceil(poly.max(0) + reach + 1).astype(int).clip(0, [w, h])
    if (hi <= lo).any():
        return out
    w_box, h_box = hi - lo
    step = int(np.clip(feather // _COARSE_FEATHER, 1, 4)) if coarse else 1
    if step > 1 and min(w_box, h_box) >= 4 * step:
        # The distance is 1-Lipschitz, so sampled every ``step`` pixels (at most a sixth of
        # the feather) and interpolated linearly it is off by a fraction of a pixel: invisible
        # in an edge this soft, at a fraction of the cost. Coarse sample i sits at fine
        # coordinate step * i + (step - 1) / 2, where cv2.resize expects it.
        cw, ch = -(-w_box // step), -(-h_box // step)
        coarse_sd = step * _signed_distance((poly - lo - (step - 1) / 2) / step, cw, ch)
        sd = cv2.resize(coarse_sd, (cw * step, ch * step),
                        interpolation=cv2.INTER_LINEAR)[:h_box, :w_box]
    else:
        sd = _signed_distance(poly - lo, w_box, h_box)
    out[lo[1]:hi[1], lo[0]:hi[0]] = _ramp(offset - sd, feather)
    return out


def frame_mask(landmarks: np.ndarray, box: Box, to_face: np.ndarray,
               settings: MaskSettings = MaskSettings(),
               overrides: Iterable[MaskOverride] = (), *, outline: np.ndarray | None = None,
               union: np.ndarray | None = None, base: np.ndarray | None = None) -> np.ndarray:
    """The final mask of one frame in the crop ``box``: landmark mask with the frame's overrides.

    ``outline`` (face coordinates) replaces the landmark outline, drawn the way the landmark
    mask is (dilated, feathered); ``base`` (a mask of the crop, the face parsing's) stands in
    for the landmark mask as it is (dilation and feather do not apply to it). Replace polygons
    (their union) stand in for either; ``union`` (a mask of the crop, e.g. the generated
    mouth's) is united with it; add and erase shapes apply in order; exclude shapes are cut
    out last, so an exclusion always wins. The result is tapered to 0 at the crop's border,
    since the crop's edge is pasted back into the frame hard.
    """
    scale = face_scale(landmarks)
    feather = settings.feather * scale
    shape = _shape(box)
    overrides = tuple(overrides)
    to_frame = geo.invert(np.asarray(to_face, np.float64))

    def soft(o: MaskOverride) -> np.ndarray:
        points = o.in_crop(to_face, box)
        if o.radius is None:
            return polygon_mask(points, shape, feather / 2, feather)
        radius = o.radius * float(geo.scale_of(to_frame))
        return stroke_mask(points, shape, radius + feather / 2, feather)

    replace = [soft(o) for o in overrides if o.mode == "replace"]
    if replace:
        mask = np.maximum.reduce(replace)
    elif outline is not None:
        poly = geo.apply(to_frame, np.asarray(outline, np.float64)) - box[:2]
        grow = settings.dilation + MARGINS.get(settings.kind, 0.0)
        mask = polygon_mask(poly, shape, grow * scale, feather, coarse=True)
    elif base is not None:
        mask = base.astype(np.float32, copy=True)
    else:
        mask = landmark_mask(landmarks, box, settings)
    if union is not None:
        np.maximum(mask, union, out=mask)
    for o in overrides:
        if o.mode == "add":
            np.maximum(mask, soft(o), out=mask)
        elif o.mode == "erase":
            mask *= 1 - soft(o)
    for o in overrides:
        if o.mode == "exclude":
            mask *= 1 - soft(o)
    mask *= _border_taper(shape, feather)
    return mask


def stroke_mask(points: np.ndarray, shape: tuple[int, int], radius: float,
                feather: float) -> np.ndarray:
    """Soft mask (float32, ``shape``) of a brush stroke along ``points`` (crop pixels).

    The edge is ``radius`` pixels from the stroke's centre line (round caps and joins) and the
    mask falls from 1 to 0 across it over ``feather`` pixels; elsewhere it is exactly 0.
    """
    h, w = shape
    out = np.zeros((h, w), np.float32)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    reach = max(radius + feather / 2, 0.0) + 1
    lo = np.floor(pts.min(0) - reach).astype(int).clip(0, [w, h])
    hi = np.ceil(pts.max(0) + reach + 1).astype(int).clip(0, [w, h])
    if (hi <= lo).any():
        return out
    local = pts - lo
    segments = list(zip(local, local[1:])) if len(local) > 1 else [(local[0], local[0])]
    d2 = _segments_distance2(segments, hi[0] - lo[0], hi[1] - lo[1])
    out[lo[1]:hi[1], lo[0]:hi[0]] = _ramp(radius - np.sqrt(d2), feather)
    return out


def _shape(box: Box) -> tuple[int, int]:
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop box {box}")
    return y1 - y0, x1 - x0


def _ramp(depth: np.ndarray, width: float) -> np.ndarray:
    """1 for depth >= width/2 inside the edge, 0 for depth <= -width/2, smoothstep between."""
    if width <= 1e-3:
        return (depth >= 0).astype(np.float32)
    t = np.clip(depth / np.float32(width) + np.float32(0.5), 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def _border_taper(shape: tuple[int, int], width: float) -> np.ndarray:
    """0 on the crop's outermost pixels, rising to 1 at ``width`` pixels in."""
    h, w = shape
    width = max(width, 1.0)
    ys = np.minimum(np.arange(h), np.arange(h)[::-1]).astype(np.float32)
    xs = np.minimum(np.arange(w), np.arange(w)[::-1]).astype(np.float32)
    return _ramp(np.minimum(ys[:, None], xs[None, :]) - width / 2, width)


def _signed_distance(poly: np.ndarray, w: int, h: int) -> np.ndarray:
    """Exact distance from each pixel centre of a (h, w) grid to a closed polygon's outline,
    negative inside (even-odd rule)."""
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    inside = np.zeros((h, w), bool)
    edges = list(zip(poly, np.roll(poly, -1, axis=0)))
    for (ax, ay), (bx, by) in edges:
        # Crossing test of a ray towards +x: the crossing's x depends only on the row.
        rows = (ay > ys) != (by > ys)
        if rows.any():
            cross_x = ax + (ys[rows] - ay) * ((bx - ax) / (by - ay))
            inside[rows] ^= xs[None, :] < cross_x[:, None]
    dist = np.sqrt(_segments_distance2(edges, w, h))
    return np.where(inside, -dist, dist)


def _segments_distance2(segments: Iterable[tuple[np.ndarray, np.ndarray]], w: int,
                        h: int) -> np.ndarray:
    """Squared distance from each pixel centre of a (h, w) grid to the nearest segment."""
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    d2 = np.full((h, w), np.inf, np.float32)
    t = np.empty((h, w), np.float32)
    ex = np.empty((h, w), np.float32)
    ey = np.empty((h, w), np.float32)
    for (ax, ay), (bx, by) in segments:
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        px = (xs - np.float32(ax))[None, :]
        py = (ys - np.float32(ay))[:, None]
        # Position of the nearest point along the segment, clamped to its ends.
        if length2 > 0:
            np.add(px * np.float32(dx / length2), py * np.float32(dy / length2), out=t)
            np.clip(t, 0, 1, out=t)
        else:
            t.fill(0)
        np.multiply(t, np.float32(dx), out=ex)
        np.subtract(px, ex, out=ex)
        np.multiply(t, np.float32(dy), out=ey)
        np.subtract(py, ey, out=ey)
        np.multiply(ex, ex, out=ex)
        np.multiply(ey, ey, out=ey)
        np.add(ex, ey, out=ex)
        np.minimum(d2, ex, out=d2)
    return d2
