"""A decoded video frame as plain numpy data, in the source's own pixel format.

Frames keep the decoder's native planes (e.g. 8-bit or 10-bit Y'CbCr 4:2:0) rather than RGB, so
pixels nobody edits are written out exactly as they came in: converting a whole frame to RGB and
back would resample chroma and round every pixel. ``rgb()`` gives an 8-bit RGB view for analysis
and display; ``with_region()`` writes an edited RGB patch back into the native planes, touching
only the pixels inside the patch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import av
import numpy as np

# Packed Y'CbCr layouts are unpacked to their planar twin (lossless) so every plane is a 2-D array.
_PLANAR_TWIN = {"yuyv422": "yuv422p", "uyvy422": "yuv422p", "yvyu422": "yuv422p",
                "y210le": "yuv422p10le", "nv21": "nv12", "nv16": "yuv422p", "nv24": "yuv444p",
                "nv42": "yuv444p", "p210le": "yuv422p10le", "p410le": "yuv444p10le"}

# FFmpeg's numbering (AVColorSpace etc.): 2 means "unspecified".
UNSPECIFIED = 2
_BT709, _BT470BG, _RANGE_MPEG, _RANGE_JPEG = 1, 5, 1, 2


@dataclass(frozen=True)
class ColorInfo:
    """Colour signal description, in FFmpeg's enum numbering (H.273 code points)."""

    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED
    matrix: int = UNSPECIFIED
    range: int = 0  # 0 unspecified, 1 limited ("tv"), 2 full ("pc")

    def effective_matrix(self, height: int) -> int:
        """Matrix to convert with: players assume BT.709 for untagged HD and BT.601 below it."""
        if self.matrix not in (UNSPECIFIED, 0, 3):
            return self.matrix
        return _BT709 if height >= 720 else _BT470BG

    def effective_range(self, pix_fmt: str) -> int:
        if self.range in (_RANGE_MPEG, _RANGE_JPEG):
            return self.range
        return _RANGE_JPEG if pix_fmt.startswith("yuvj") else _RANGE_MPEG


def plane_layout(pix_fmt: str) -> list[tuple[np.dtype, int]]:
    """(dtype, samples per pixel) of each plane of a planar or packed-RGB/grey format."""
    fmt = av.VideoFormat(pix_fmt)
    counts: dict[int, int] = {}
    bits: dict[int, int] = {}
    for comp in fmt.components:
        counts[comp.plane] = counts.get(comp.plane, 0) + 1
        bits[comp.plane] = max(bits.get(comp.plane, 0), comp.bits)
    return [(np.dtype(np.uint8 if bits[p] <= 8 else np.uint16), counts[p])
            for p in sorted(counts)]


def native_format(pix_fmt: str) -> str:
    """The format frames are kept in: the decoder's own, or its lossless planar twin."""
    if pix_fmt in _PLANAR_TWIN:
        return _PLANAR_TWIN[pix_fmt]
    fmt = av.VideoFormat(pix_fmt)
    if fmt.is_bit_stream or fmt.is_bayer or fmt.has_palette or fmt.is_big_endian:
        return "rgb48le" if max(c.bits for c in fmt.components) > 8 else "rgb24"
    if not fmt.is_planar and not fmt.is_rgb and len(fmt.components) > 1:
        return "yuv444p16le" if max(c.bits for c in fmt.components) > 8 else "yuv444p"
    return pix_fmt


# Chroma subsampled across but not down (4:2:2) is subsampled down but not across (4:4:0) once
# the picture is turned on its side, and back.
_TURNED = {"yuv422p": "yuv440p", "yuvj422p": "yuvj440p", "yuv422p10le": "yuv440p10le",
           "yuv422p12le": "yuv440p12le"}
_TURNED.update({v: k for k, v in _TURNED.items()})


def turned_format(pix_fmt: str, quarter_turns: int) -> str | None:
    """The format of ``pix_fmt``'s planes turned by ``quarter_turns`` x 90 degrees (None: no
    format holds them, e.g. 4:1:1 on its side)."""
    if quarter_turns % 2 == 0:
        return pix_fmt
    if pix_fmt in _TURNED:
        return _TURNED[pix_fmt]
    fmt = av.VideoFormat(pix_fmt, 64, 64)
    if len(fmt.components) < 3 or fmt.is_rgb:
        return pix_fmt
    chroma = fmt.components[1]
    return pix_fmt if chroma.width == chroma.height else None


def planes_from_av(frame: av.VideoFrame) -> tuple[np.ndarray, ...]:
    """Copy an av frame's planes into packed numpy arrays (row padding dropped)."""
    out = []
    for plane, (dtype, channels) in zip(frame.planes, plane_layout(frame.format.name)):
        row = plane.width * channels
        buf = np.frombuffer(plane, dtype=dtype)
        arr = buf.reshape(plane.height, plane.line_size // dtype.itemsize)[:, :row]
        arr = arr.reshape(plane.height, plane.width, channels) if channels > 1 else arr
        out.append(np.ascontiguousarray(arr))
    return tuple(out)


def av_from_planes(planes: tuple[np.ndarray, ...], pix_fmt: str, width: int,
                   height: int) -> av.VideoFrame:
    """Build an av frame from packed numpy planes (row padding added as the encoder expects)."""
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane, data in zip(frame.planes, planes):
        itemsize = data.dtype.itemsize
        rows = data.reshape(plane.height, -1)
        stride = plane.line_size // itemsize
        if rows.shape[1] == stride:
            plane.update(np.ascontiguousarray(rows))
        else:
            padded = np.zeros((plane.height, stride), dtype=data.dtype)
            padded[:, : rows.shape[1]] = rows
            plane.update(padded)
    return frame


@dataclass(eq=False)
class Frame:
    """One decoded picture, upright, with its place on the clip's timeline."""

    index: int  # position in presentation order within the stream
    time: float  # seconds on the clip timeline; the first frame is at 0
    pts: int  # presentation timestamp in the stream's time base, first frame at 0
    pix_fmt: str
    width: int
    height: int
    planes: tuple[np.ndarray, ...]
    color: ColorInfo = field(default_factory=ColorInfo)
    _rgb: np.ndarray | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        """Memory the frame holds once its RGB view exists (caches budget with this)."""
        return sum(p.nbytes for p in self.planes) + self.width * self.height * 3

    @property
    def bit_depth(self) -> int:
        return max(c.bits for c in av.VideoFormat(self.pix_fmt).components)

    def to_av(self) -> av.VideoFrame:
        """An av frame of the native planes, with colour tags set (for encoding)."""
        frame = av_from_planes(self.planes, self.pix_fmt, self.width, self.height)
        frame.colorspace = self.color.matrix
        frame.color_range = self.color.range
        frame.color_primaries = self.color.primaries
        frame.color_trc = self.color.transfer
        return frame

    def rgb(self) -> np.ndarray:
        """8-bit RGB, (height, width, 3), C-contiguous; computed once and kept."""
        if self._rgb is None:
            src = av_from_planes(self.planes, self.pix_fmt, self.width, self.height)
            self._rgb = to_rgb(src, self.color, self.pix_fmt, self.height)
        return self._rgb

    def rgb_region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """8-bit RGB of the box (x1, y1 exclusive), equal to ``rgb()[y0:y1, x0:x1]``.

        Converts only the box (with a margin for chroma interpolation) unless the whole
        frame's RGB view already exists: editing a mouth needs a few percent of a 4K frame.
        """
        if self._rgb is not None:
            return self._rgb[y0:y1, x0:x1]
        hx0, hy0, hx1, hy1 = self._hull(x0, y0, x1, y1)
        rgb = to_rgb(av_from_planes(self._plane_box(hx0, hy0, hx1, hy1), self.pix_fmt,
                                    hx1 - hx0, hy1 - hy0), self.color, self.pix_fmt, self.height)
        return rgb[y0 - hy0 : y1 - hy0, x0 - hx0 : x1 - hx0]

    def _hull(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
        return _hull((x0, y0, x1, y1), self._subsampling(), self.width, self.height)

    def part(self, x0: int, y0: int, x1: int, y1: int, whole: Callable[[], Frame]) -> FramePart:
        """The box's native samples (with room for chroma interpolation), read later as this
        frame would be; ``whole`` gives the frame again for reads outside the box."""
        hx0, hy0, hx1, hy1 = self._hull(max(x0, 0), max(y0, 0), min(x1, self.width),
                                        min(y1, self.height))
        # Colour fixed for the whole picture: an untagged matrix is chosen by picture height.
        color = replace(self.color, matrix=self.color.effective_matrix(self.height),
                        range=self.color.effective_range(self.pix_fmt))
        planes = tuple(p.copy() for p in self._plane_box(hx0, hy0, hx1, hy1))
        inner = Frame(self.index, self.time, self.pts, self.pix_fmt, hx1 - hx0, hy1 - hy0,
                      planes, color)
        return FramePart(inner, hx0, hy0, self.width, self.height, whole)

    def _plane_box(self, x0: int, y0: int, x1: int, y1: int,
                   planes: tuple[np.ndarray, ...] | None = None) -> tuple[np.ndarray, ...]:
        """The planes' samples covering a chroma-aligned box of the picture."""
        sx, sy = self._subsampling()
        return tuple(pl[y0 // sy : -(-y1 // sy), x0 // sx : -(-x1 // sx)]
                     if self._is_subsampled_plane(p, sx, sy) else pl[y0:y1, x0:x1]
                     for p, pl in enumerate(planes if planes is not None else self.planes))

    def with_region(self, x: int, y: int, patch: np.ndarray,
                    mask: np.ndarray | None = None) -> Frame:
        """A new frame equal to this one except inside the RGB ``patch`` placed at (x, y).

        The patch is converted to the native format with the source's matrix and range. Luma
        (and any full-resolution plane) changes only under the patch, and only where ``mask``
        (patch-sized, optional) is above 0; subsampled chroma changes only for chroma samples
        whose footprint holds a changed pixel. Every other pixel stays bit-identical: converting
        an untouched pixel to RGB and back would round it.
        """
        sx, sy = self._subsampling()
        ph, pw = patch.shape[:2]
        # Chroma-aligned hull of the patch; its margin is filled from the current picture.
        x0, y0 = (x // sx) * sx, (y // sy) * sy
        x1 = min(-(-(x + pw) // sx) * sx, self.width)
        y1 = min(-(-(y + ph) // sy) * sy, self.height)
        region = self.rgb_region(x0, y0, x1, y1).copy()
        region[y - y0 : y - y0 + ph, x - x0 : x - x0 + pw] = patch
        native = from_rgb(region, self.pix_fmt, self.color, self.height)
        changed = np.zeros((y1 - y0, x1 - x0), bool)
        changed[y - y0 : y - y0 + ph, x - x0 : x - x0 + pw] = True if mask is None else mask > 0
        # A chroma sample changes when any pixel of its footprint does.
        padded = np.zeros((-(-changed.shape[0] // sy) * sy, -(-changed.shape[1] // sx) * sx), bool)
        padded[: changed.shape[0], : changed.shape[1]] = changed
        chroma_changed = padded.reshape(padded.shape[0] // sy, sy, -1, sx).any(axis=(1, 3))
        new_planes = []
        for p, (plane, sub) in enumerate(zip(self.planes, native)):
            out = plane.copy()
            if self._is_subsampled_plane(p, sx, sy):
                view = out[y0 // sy : y0 // sy + sub.shape[0], x0 // sx : x0 // sx + sub.shape[1]]
                sel = chroma_changed[: sub.shape[0], : sub.shape[1]]
            else:
                view = out[y0:y1, x0:x1]
                sel = changed
            view[sel] = sub[sel]
            new_planes.append(out)
        edited = replace(self, planes=tuple(new_planes), _rgb=None)
        if self._rgb is not None:
            # Refresh only the hull of the cached RGB view instead of converting the whole frame.
            hull = self._plane_box(x0, y0, x1, y1, tuple(new_planes))
            rgb = self._rgb.copy()
            rgb[y0:y1, x0:x1] = to_rgb(av_from_planes(hull, self.pix_fmt, x1 - x0, y1 - y0),
                                       self.color, self.pix_fmt, self.height)
            edited._rgb = rgb
        return edited

    def _subsampling(self) -> tuple[int, int]:
        fmt = av.VideoFormat(self.pix_fmt, self.width, self.height)
        if fmt.is_rgb or len(fmt.components) < 3:
            return 1, 1
        return (-(-self.width // fmt.chroma_width()) if fmt.chroma_width() else 1,
                -(-self.height // fmt.chroma_height()) if fmt.chroma_height() else 1)

    @staticmethod
    def _is_subsampled_plane(p: int, sx: int, sy: int) -> bool:
        # Planes 1 and 2 carry chroma in every Y'CbCr layout we keep (nv12 packs both in 1).
        return p in (1, 2) and sx * sy > 1


@dataclass(eq=False)
class FramePart:
    """A box of a decoded frame (``Frame.part``), kept where the whole frame would be too big
    to keep (a donor's face in 2-megapixel footage): RGB reads inside the box give exactly what
    the whole frame's would, reads outside it decode the whole frame again."""

    inner: Frame  # the box's samples; its colour resolved for the whole picture
    x: int
    y: int
    width: int  # the whole frame's
    height: int
    whole: Callable[[], Frame] = field(repr=False)

    @property
    def nbytes(self) -> int:
        return self.inner.nbytes

    def rgb_region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        hx0, hy0, hx1, hy1 = self.inner._hull(x0 - self.x, y0 - self.y, x1 - self.x, y1 - self.y)
        # Exact only where the part converts the samples the whole frame would convert.
        whole = _hull((x0, y0, x1, y1), self.inner._subsampling(), self.width, self.height)
        if (hx0 + self.x, hy0 + self.y, hx1 + self.x, hy1 + self.y) != whole:
            return self.whole().rgb_region(x0, y0, x1, y1)
        return self.inner.rgb_region(x0 - self.x, y0 - self.y, x1 - self.x, y1 - self.y)


def _hull(box: tuple[int, int, int, int], subsampling: tuple[int, int], width: int,
          height: int) -> tuple[int, int, int, int]:
    """The chroma-aligned box ``rgb_region`` converts for ``box`` (x1, y1 exclusive)."""
    (x0, y0, x1, y1), (sx, sy) = box, subsampling
    margin = 4 * max(sx, sy)  # swscale's chroma filters reach a sample or two
    return (max(x0 - margin, 0) // sx * sx, max(y0 - margin, 0) // sy * sy,
            min(-(-(x1 + margin) // sx) * sx, width), min(-(-(y1 + margin) // sy) * sy, height))


def to_rgb(frame: av.VideoFrame, color: ColorInfo, pix_fmt: str, height: int) -> np.ndarray:
    """8-bit RGB of an av frame, converted with the source's matrix and range."""
    matrix = color.effective_matrix(height)
    rgb = frame.reformat(format="rgb24", src_colorspace=matrix, dst_colorspace=matrix,
                         src_color_range=color.effective_range(pix_fmt),
                         dst_color_range=_RANGE_JPEG, threads=_threads(frame))
    return np.ascontiguousarray(rgb.to_ndarray())


def from_rgb(rgb: np.ndarray, pix_fmt: str, color: ColorInfo,
             height: int) -> tuple[np.ndarray, ...]:
    """Native planes of an 8-bit RGB image, using ``color`` as the source frame's would be read.

    ``height`` is the full picture's height, which decides the matrix of untagged sources.
    """
    matrix = color.effective_matrix(height)
    src = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    out = src.reformat(format=pix_fmt, src_colorspace=matrix, dst_colorspace=matrix,
                       src_color_range=_RANGE_JPEG,
                       dst_color_range=color.effective_range(pix_fmt), threads=_threads(src))
    return planes_from_av(out)


def _threads(frame: av.VideoFrame) -> int:
    # Starting swscale's thread pool costs more than converting a face-sized region (about
    # 0.3 ms against 0.05 ms); whole frames are worth it.
    return 1 if frame.width * frame.height < (1 << 19) else 0
