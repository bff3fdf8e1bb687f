"""Manual corrections of a sync: keyframed mask shapes, keep-original spans and motion curves.

Everything is stored per clip frame index, and every shape in the canonical face coordinates
of the face analysis (see ``engine.mask``), so a correction drawn on one frame follows the head
on the next.

Layers (:class:`MaskLayer`) are shapes with keyframes:

- ``outline``: the edited mask outline, standing in for the automatic (landmark) one and drawn
  the same way (dilation, feather). At most one per clip. Its keys hold before the first and
  after the last; a key may be *automatic* (``points`` None): the outline there is the frame's
  own landmark outline, so a correction blends back into the automatic mask towards it. Keys
  also carry the dilation and feather (None: the range's setting).
- ``add`` / ``erase``: brush strokes (``radius`` set) or polygons touching the mask up, applied
  in layer order; ``exclude``: regions always kept from the source (a hand, a microphone).
  These are active from their first to their last key only.

Between two keys the shape is interpolated linearly. Shapes with different vertex counts are
matched by arc length, each sampled at its own vertices and the other's, so both are
represented exactly and corners are never cut.

Keep-original spans leave the source mouth untouched (a laugh or a breath the dub does not
have), easing back to the re-synced mouth over :data:`KEEP_FADE` frames on either side.
"""
from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from engine.curves import MotionCurves
from engine.errors import UsageError
from engine.face import geometry as geo
from engine.mask import LOWER_FACE, MaskOverride, MaskSettings

Role = Literal["outline", "add", "erase", "exclude"]
ROLES: tuple[str, ...] = ("outline", "add", "erase", "exclude")
KEEP_FADE = 3  # frames over which a keep-original span eases in and out
# Stand-in for a frame's automatic outline when only comparing corrections with each other.
_TEMPLATE_OUTLINE = geo.TEMPLATE_68[LOWER_FACE]

AutoOutline = Callable[[], np.ndarray]  # the frame's automatic outline, face coordinates


def keep_fade(distance: int) -> float:
    """Share of the source kept ``distance`` frames from a frame kept as it is: the new mouth
    eases back in over KEEP_FADE frames."""
    return max(0.0, 1.0 - distance / (KEEP_FADE + 1))


@dataclass(frozen=True, eq=False)
class ShapeKey:
    """A layer's shape on one frame."""

    points: np.ndarray | None  # (K, 2) face coordinates; None: automatic (outline only)
    dilation: float | None = None  # outline only; None: the range's setting
    feather: float | None = None

    def __post_init__(self) -> None:
        if self.points is not None:
            pts = np.array(self.points, dtype=np.float64)
            if pts.ndim != 2 or pts.shape[1] != 2 or not len(pts) or not np.isfinite(pts).all():
                raise UsageError(f"bad mask shape: {pts.shape} points")
            pts.setflags(write=False)  # keys are shared between undo snapshots
            object.__setattr__(self, "points", pts)
        for name in ("dilation", "feather"):
            value = getattr(self, name)
            if value is not None:
                if not np.isfinite(value) or (name == "feather" and value < 0):
                    raise UsageError(f"bad mask {name}: {value}")
                object.__setattr__(self, name, float(value))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ShapeKey):
            return NotImplemented
        return (_same_points(self.points, other.points) and self.dilation == other.dilation
                and self.feather == other.feather)

    def to_dict(self) -> dict[str, Any]:
        return {"points": None if self.points is None else self.points.tolist(),
                "dilation": self.dilation, "feather": self.feather}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShapeKey:
        return cls(None if d.get("points") is None else np.array(d["points"], np.float64),
                   d.get("dilation"), d.get("feather"))


@dataclass
class MaskLayer:
    role: Role
    keys: dict[int, ShapeKey] = field(default_factory=dict)  # frame index -> shape
    radius: float | None = None  # brush radius, face units: the points are a stroke
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise UsageError(f"unknown mask layer role {self.role!r} ({', '.join(ROLES)})")
        if self.radius is not None and not (np.isfinite(self.radius) and self.radius > 0):
            raise UsageError(f"bad brush radius {self.radius}")
        for key in self.keys.values():
            least = 1 if self.radius is not None else 3
            if key.points is None and self.role != "outline":
                raise UsageError("only the outline has automatic keys")
            if key.points is not None and len(key.points) < least:
                raise UsageError(f"a mask {'stroke' if least == 1 else 'shape'} needs at "
                                 f"least {least} points")

    @property
    def frames(self) -> list[int]:
        return sorted(self.keys)

    def span(self) -> tuple[int, int] | None:
        """First and last frame the layer acts on (None: every frame, or none without keys)."""
        if not self.keys or self.role == "outline":
            return None
        frames = self.frames
        return frames[0], frames[-1]

    def active(self, frame: int) -> bool:
        if not self.keys:
            return False
        span = self.span()
        return span is None or span[0] <= frame <= span[1]

    def at(self, frame: int, auto: AutoOutline | None = None) -> ShapeKey:
        """The interpolated shape on ``frame`` (automatic keys resolved with ``auto``)."""
        frames = self.frames
        if frame in self.keys:
            return self.keys[frame]
        i = int(np.searchsorted(frames, frame))
        if i == 0 or i == len(frames):  # outside the keys: the nearest one holds
            return self.keys[frames[0] if i == 0 else frames[-1]]
        a, b = self.keys[frames[i - 1]], self.keys[frames[i]]
        t = (frame - frames[i - 1]) / (frames[i] - frames[i - 1])
        return ShapeKey(_lerp_points(a.points, b.points, t, self.radius is None, auto),
                        _lerp_value(a.dilation, b.dilation, t),
                        _lerp_value(a.feather, b.feather, t))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "radius": self.radius,
                "keys": {str(f): k.to_dict() for f, k in sorted(self.keys.items())}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskLayer:
        radius = d.get("radius")
        return cls(str(d["role"]), {int(f): ShapeKey.from_dict(k)
                                    for f, k in d.get("keys", {}).items()},
                   None if radius is None else float(radius),
                   str(d.get("id") or uuid.uuid4().hex[:8]))


@dataclass(frozen=True, eq=False)
class FrameEdits:
    """What the corrections do on one frame, ready for ``engine.mask.frame_mask``."""

    outline: np.ndarray | None  # face coordinates; None: the automatic outline
    dilation: float | None  # None: the range's setting
    feather: float | None
    overrides: tuple[MaskOverride, ...]  # add / erase in order, then exclusions
    keep: float  # share of the source: 0 re-synced as usual, 1 the source untouched

    def mask_settings(self, base: MaskSettings) -> MaskSettings:
        return MaskSettings(base.kind,
                            base.dilation if self.dilation is None else self.dilation,
                            base.feather if self.feather is None else self.feather)

    def same(self, other: FrameEdits) -> bool:
        return (_same_points(self.outline, other.outline) and self.dilation == other.dilation
                and self.feather == other.feather and self.keep == other.keep
                and len(self.overrides) == len(other.overrides)
                and all(a.mode == b.mode and a.radius == b.radius
                        and _same_points(a.polygon, b.polygon)
                        for a, b in zip(self.overrides, other.overrides)))

    def reach(self) -> np.ndarray | None:
        """(2, 2) face-coordinate bounds (min, max) of what can add to the mask, brush radii
        included; None when only the automatic outline does."""
        parts = [] if self.outline is None else [self.outline]
        for o in self.overrides:
            if o.mode == "add":
                r = o.radius or 0.0
                parts += [o.polygon - r, o.polygon + r]
        if not parts:
            return None
        points = np.vstack(parts)
        return np.stack([points.min(0), points.max(0)])


NO_EDITS = FrameEdits(None, None, None, (), 0.0)


@dataclass
class Corrections:
    """All manual corrections of a clip."""

    layers: list[MaskLayer] = field(default_factory=list)
    keep: list[tuple[int, int]] = field(default_factory=list)  # inclusive frame spans
    curves: MotionCurves = field(default_factory=MotionCurves)

    def __post_init__(self) -> None:
        self.keep = [(int(a), int(b)) for a, b in self.keep]
        if any(b < a for a, b in self.keep):
            raise UsageError("a keep-original span ends before it starts")
        if sum(layer.role == "outline" for layer in self.layers) > 1:
            raise UsageError("only one mask outline layer per clip")

    def copy(self) -> Corrections:
        """An independent copy (keys are immutable and shared)."""
        return Corrections([MaskLayer(l.role, dict(l.keys), l.radius, l.id) for l in self.layers],
                           list(self.keep), copy.deepcopy(self.curves))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Corrections):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def outline(self) -> MaskLayer | None:
        return next((l for l in self.layers if l.role == "outline"), None)

    def layer(self, layer_id: str) -> MaskLayer:
        for layer in self.layers:
            if layer.id == layer_id:
                return layer
        raise KeyError(layer_id)

    def keep_weight(self, frame: int) -> float:
        """1 inside a keep-original span, easing to 0 over KEEP_FADE frames outside it."""
        weight = 0.0
        for a, b in self.keep:
            weight = max(weight, keep_fade(max(a - frame, frame - b, 0)))
        return weight

    def at(self, frame: int, auto: AutoOutline | None = None) -> FrameEdits:
        """The corrections on ``frame``; ``auto`` gives its automatic outline (face coords)."""
        auto = auto or (lambda: _TEMPLATE_OUTLINE)
        outline = dilation = feather = None
        overrides: list[MaskOverride] = []
        exclusions: list[MaskOverride] = []
        for layer in self.layers:
            if not layer.active(frame):
                continue
            key = layer.at(frame, auto)
            if layer.role == "outline":
                outline, dilation, feather = key.points, key.dilation, key.feather
            else:
                shape = MaskOverride(key.points, layer.role, layer.radius)
                (exclusions if layer.role == "exclude" else overrides).append(shape)
        return FrameEdits(outline, dilation, feather, tuple(overrides + exclusions),
                          self.keep_weight(frame))

    # -- edits (in place; the editor applies them to a copy and keeps both for undo) ------
    def set_outline(self, frame: int, points: np.ndarray | None, *,
                    dilation: float | None | bool = True,
                    feather: float | None | bool = True) -> None:
        """Key the outline on ``frame`` (``points`` None: automatic there).

        ``dilation`` / ``feather`` True keep the value the frame has now; a number or None
        (the range's setting) sets it.
        """
        layer = self.outline()
        if layer is None:
            layer = MaskLayer("outline")
            self.layers.insert(0, layer)
        # Only the sizes are read: any stand-in serves for an automatic neighbour's outline.
        now = layer.at(frame, lambda: _TEMPLATE_OUTLINE) if layer.keys else ShapeKey(None)
        layer.keys[frame] = ShapeKey(points, now.dilation if dilation is True else dilation,
                                     now.feather if feather is True else feather)

    def add_shape(self, role: Role, frame: int, points: np.ndarray,
                  radius: float | None = None) -> str:
        """A new add / erase / exclude layer keyed on ``frame``; returns its id."""
        if role == "outline":
            raise UsageError("the outline is keyed with set_outline")
        layer = MaskLayer(role, {frame: ShapeKey(points)}, radius)
        self.layers.append(layer)
        return layer.id

    def set_key(self, layer_id: str, frame: int, points: np.ndarray) -> None:
        """Key an existing add / erase / exclude layer's shape on ``frame``."""
        layer = self.layer(layer_id)
        layer.keys[frame] = ShapeKey(points)

    def move_key(self, layer_id: str, src: int, dst: int) -> None:
        """Move a key to another frame (replacing any key there)."""
        layer = self.layer(layer_id)
        if src != dst:
            layer.keys[dst] = layer.keys.pop(src)

    def delete_key(self, layer_id: str, frame: int) -> None:
        """Delete a key; a layer left without keys goes (the outline: back to automatic)."""
        layer = self.layer(layer_id)
        layer.keys.pop(frame, None)
        if not layer.keys:
            self.layers.remove(layer)

    def copy_key(self, layer_id: str, frame: int, first: int, last: int,
                 auto: AutoOutline | None = None) -> None:
        """The layer's shape on ``frame`` keyed at ``first`` and ``last``: it holds over the
        span between them (and, following the head, looks the same relative to the face).
        ``auto`` is ``frame``'s automatic outline, for an outline between automatic keys."""
        layer = self.layer(layer_id)
        key = layer.at(frame, auto)
        for target in (first, last):
            layer.keys[target] = key

    def reset_to_automatic(self, layer_id: str, frames: list[int]) -> None:
        """Outline keys on ``frames`` become automatic (the outline layer goes once all are);
        keys of other layers are deleted."""
        layer = self.layer(layer_id)
        if layer.role != "outline":
            for frame in frames:
                if layer in self.layers:  # deleting its last key removes it
                    self.delete_key(layer_id, frame)
            return
        for frame in frames:
            if frame in layer.keys:
                layer.keys[frame] = ShapeKey(None)
        if all(k.points is None and k.dilation is None and k.feather is None
               for k in layer.keys.values()):
            self.layers.remove(layer)

    def set_keep(self, first: int, last: int, index: int | None = None) -> None:
        """Add a keep-original span (or change span ``index``); overlapping spans merge."""
        spans = [s for i, s in enumerate(self.keep) if i != index]
        first, last = sorted((int(first), int(last)))
        merged: list[tuple[int, int]] = []
        for a, b in sorted(spans + [(first, last)]):
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self.keep = merged

    def delete_keep(self, index: int) -> None:
        del self.keep[index]

    def changed_frames(self, other: Corrections, frames: np.ndarray) -> np.ndarray:
        """Those of ``frames`` whose mask or keep weight differs between ``self`` and ``other``.

        Only layers and spans that changed are looked at; the curves are not (they change the
        motion plan: see ``SyncSession.set_corrections``).
        """
        frames = np.asarray(frames, dtype=np.int64)
        candidates = np.zeros(len(frames), bool)
        mine = {l.id: l for l in self.layers}
        theirs = {l.id: l for l in other.layers}
        order_changed = [l.id for l in self.layers if l.id in theirs] != \
            [l.id for l in other.layers if l.id in mine]
        for layer_id in mine.keys() | theirs.keys():
            a, b = mine.get(layer_id), theirs.get(layer_id)
            if a is not None and b is not None and not order_changed \
                    and (a.role, a.radius) == (b.role, b.radius):
                lo, hi = _reach(a, b)
                if lo is not None:
                    candidates |= (frames >= lo) & (frames <= hi)
                continue
            for layer in (a, b):
                if layer is None or not layer.keys:
                    continue
                span = layer.span()
                candidates |= True if span is None else (frames >= span[0]) & (frames <= span[1])
        for a, b in set(self.keep) ^ set(other.keep):
            candidates |= (frames >= a - KEEP_FADE) & (frames <= b + KEEP_FADE)
        changed = [f for f in frames[candidates] if not self.at(int(f)).same(other.at(int(f)))]
        return np.array(changed, dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [l.to_dict() for l in self.layers],
                "keep": [list(span) for span in sorted(self.keep)],
                "curves": self.curves.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Corrections:
        return cls([MaskLayer.from_dict(l) for l in d.get("layers", [])],
                   [(int(a), int(b)) for a, b in d.get("keep", [])],
                   MotionCurves.from_dict(d.get("curves", {})))


def match_shapes(a: np.ndarray, b: np.ndarray, closed: bool = True) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """``a`` and ``b`` resampled to corresponding points (same count) along their outlines.

    Equal counts correspond vertex to vertex. Otherwise both are sampled at the union of their
    vertices' arc-length positions (so each keeps all its own vertices), closed outlines after
    turning ``b`` to ``a``'s orientation and start.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) == len(b):
        return a, b
    if closed:
        if _area(a) * _area(b) < 0:
            b = b[::-1]
        b = np.roll(b, -_best_start(a, b), axis=0)
    sa, sb = _arc_params(a, closed), _arc_params(b, closed)
    u = np.union1d(sa, sb)
    return _sample(a, sa, u, closed), _sample(b, sb, u, closed)


def _lerp_points(a: np.ndarray | None, b: np.ndarray | None, t: float, closed: bool,
                 auto: AutoOutline | None) -> np.ndarray | None:
    if a is None and b is None:
        return None
    if a is None or b is None:
        if auto is None:
            raise ValueError("an automatic key needs the frame's automatic outline")
        outline = np.asarray(auto(), np.float64)
        a = outline if a is None else a
        b = outline if b is None else b
    a, b = match_shapes(a, b, closed)
    return (1 - t) * a + t * b


def _lerp_value(a: float | None, b: float | None, t: float) -> float | None:
    if a is None or b is None:  # the range's setting on one side: no number to blend with
        return a if t < 0.5 else b
    return (1 - t) * a + t * b


def _same_points(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and np.array_equal(a, b)


def _reach(a: MaskLayer, b: MaskLayer) -> tuple[float | None, float]:
    """Frames two versions of a layer may differ on: between the keys around those that
    differ (a frame's shape depends only on the keys either side of it). (None, 0): none."""
    keys = sorted(a.keys.keys() | b.keys.keys())
    differ = [i for i, f in enumerate(keys) if a.keys.get(f) != b.keys.get(f)]
    if not differ:
        return None, 0.0
    lo = keys[differ[0] - 1] + 1 if differ[0] > 0 else -np.inf
    hi = keys[differ[-1] + 1] - 1 if differ[-1] + 1 < len(keys) else np.inf
    return lo, hi


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _arc_params(poly: np.ndarray, closed: bool) -> np.ndarray:
    """Normalised arc-length position of each vertex, in [0, 1)."""
    pts = np.vstack([poly, poly[:1]]) if closed else poly
    steps = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    total = steps.sum()
    if total <= 0:
        return np.linspace(0, 1, len(poly), endpoint=not closed)
    return np.concatenate([[0.0], np.cumsum(steps)[:len(poly) - 1]]) / total


def _sample(poly: np.ndarray, params: np.ndarray, at: np.ndarray, closed: bool) -> np.ndarray:
    """Points at normalised arc-length positions ``at`` along the outline."""
    pts = np.vstack([poly, poly[:1]]) if closed else poly
    knots = np.append(params, 1.0) if closed else params
    return np.column_stack([np.interp(at, knots, pts[:, 0]), np.interp(at, knots, pts[:, 1])])


def _best_start(a: np.ndarray, b: np.ndarray) -> int:
    """The vertex of ``b`` to start from so its outline lines up with ``a``'s."""
    grid = np.linspace(0, 1, 64, endpoint=False)
    ref = _sample(a, _arc_params(a, True), grid, True)
    costs = []
    for shift in range(len(b)):
        rolled = np.roll(b, -shift, axis=0)
        costs.append(((_sample(rolled, _arc_params(rolled, True), grid, True) - ref) ** 2).sum())
    return int(np.argmin(costs))
