"""Lip-sync quality and speed benchmark for the default backend.

    .venv/bin/python bench/quality.py [--clips NAME ...] [--out bench/out] [--parts self cross]

Self-reenactment: each shared clip learns from one half (``train_range``), re-syncs the other
half to its own sound, and is compared with the real footage of that half; then the halves
swap. Cross-dub: each clip driven by ``speech_radio31_16k.wav``. Speed is ``bench/speed.py``'s.
Self and cross rows also give the share of edited frames with a face that are re-synced (the
others keep their own mouth: the face could not be placed there).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.audio import dub_features  # noqa: E402
from engine.face.analysis import FaceAnalysis, analyze_range  # noqa: E402
from engine.lipsync.shape import openness  # noqa: E402
from engine.mask import face_scale, landmark_polygon  # noqa: E402
from engine.media.reader import VideoReader  # noqa: E402
from engine.pipeline import SyncSession, SyncSettings, sync  # noqa: E402
from engine.render import ExportSettings  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "media"
CLIPS = ["hdtf_aoc_512.mp4", "retalk_face2_844.mp4", "retalk_face3_590.mp4",
         "retalk_face5_524.mp4", "talk_d12_512.mp4", "talk_s18_720p.mp4"]
DUB = "speech_radio31_16k.wav"
LAGS = range(-5, 6)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def best_lag(a: np.ndarray, b: np.ndarray) -> int:
    """Shift of ``a`` (frames) that correlates best with ``b``; positive: ``a`` is late."""
    scores = []
    for lag in LAGS:
        x, y = (a[lag:], b[: len(b) - lag]) if lag >= 0 else (a[:lag], b[-lag:])
        scores.append(pearson(x, y))
    return list(LAGS)[int(np.nanargmax(scores))]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two grey images (Gaussian window, sigma 1.5, the usual constants)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma * ma, blur(b * b) - mb * mb, blur(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(s.mean())


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())


def psnr(mean_square_error: float) -> float:
    return float("inf") if mean_square_error == 0 else 10 * np.log10(255.0 ** 2 / mean_square_error)


def mouth_box(landmarks: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    pts = landmarks[48:68]
    pad = 0.15 * face_scale(landmarks)
    x0, y0 = np.maximum(np.floor(pts.min(0) - pad).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0) + pad).astype(int), [shape[1], shape[0]])
    return int(x0), int(y0), int(x1), int(y1)


def ring_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels near the lower-face mask's edge, where a seam would flicker."""
    poly = landmark_polygon(landmarks, "lower_face").astype(np.int32)
    inside = np.zeros(shape, np.uint8)
    cv2.fillPoly(inside, [poly], 1)
    width = max(2, int(0.12 * face_scale(landmarks)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return (cv2.dilate(inside, kernel) - cv2.erode(inside, kernel)).astype(bool)


def compare(source: Path, output: Path, frames: range, src: FaceAnalysis,
            out: FaceAnalysis) -> dict[str, float]:
    """Per-frame metrics of ``output`` against ``source`` over ``frames``."""
    open_src = openness(src.landmarks[frames.start:frames.stop])
    open_out = openness(out.landmarks[frames.start:frames.stop])
    errors, ssims, outside, flicker_src, flicker_out = [], [], 0, [], []
    prev = None
    with VideoReader(source) as a, VideoReader(output) as b:
        for fa, fb in zip(a.frames(frames.start, frames.stop), b.frames(frames.start, frames.stop)):
            i = fa.index
            ra, rb = fa.rgb(), fb.rgb()
            x0, y0, x1, y1 = mouth_box(src.landmarks[i], ra.shape[:2])
            ga = cv2.cvtColor(ra[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
            gb = cv2.cvtColor(rb[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
            errors.append(mse(ga, gb))
            ssims.append(ssim(ga, gb))
            outside = max(outside, _changed_outside(fa.planes, fb.planes, src.crop_boxes[i],
                                                    ra.shape[:2]))
            ring = ring_mask(src.landmarks[i], ra.shape[:2])
            ya = cv2.cvtColor(ra, cv2.COLOR_RGB2GRAY).astype(np.float32)
            yb = cv2.cvtColor(rb, cv2.COLOR_RGB2GRAY).astype(np.float32)
            if prev is not None:
                flicker_src.append(np.abs(ya - prev[0])[ring].mean())
                flicker_out.append(np.abs(yb - prev[1])[ring].mean())
            prev = (ya, yb)
    return {"r": pearson(open_out, open_src),
            "mae": float(np.abs(open_out - open_src).mean()),
            "lag": best_lag(open_out, open_src),
            # From the mean error: frames kept as they were would make a mean of PSNRs infinite.
            "psnr": psnr(float(np.mean(errors))), "ssim": float(np.mean(ssims)),
            "outside": outside,
            "flicker": float(np.mean(flicker_out) / max(np.mean(flicker_src), 1e-6))}


def _changed_outside(pa: tuple[np.ndarray, ...], pb: tuple[np.ndarray, ...], box: np.ndarray,
                     shape: tuple[int, int]) -> int:
    """Largest difference of native samples outside the crop box (the box grown to whole
    chroma samples), so no colour conversion blurs the comparison."""
    x0, y0 = np.floor(box[:2]).astype(int) // 2 * 2
    x1, y1 = np.ceil(box[2:]).astype(int) // 2 * 2 + 2
    worst = 0
    for a, b in zip(pa, pb):
        sy, sx = shape[0] // a.shape[0], shape[1] // a.shape[1]
        diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
        diff[max(y0 // sy, 0):y1 // sy, max(x0 // sx, 0):x1 // sx] = 0
        worst = max(worst, int(diff.max()))
    return worst


def counted_sync(*args, **kwargs) -> float:
    """Run ``sync``; the share of edited frames with a face that it re-synced."""
    edited, unplaced = [], []

    def prepared(session: SyncSession) -> None:  # read before sync closes the session
        edited.append(session.edited_frames())
        unplaced.append(session.unplaced_frames())

    sync(*args, prepared=prepared, **kwargs)
    left = np.unique(np.concatenate(unplaced))
    faced = np.union1d(np.concatenate(edited), left)
    return 1.0 - left.size / faced.size if faced.size else float("nan")


def self_reenact(clip: Path, tmp: Path) -> list[dict[str, float]]:
    with VideoReader(clip) as r:
        n, times, duration = r.frame_count, r.times, r.info.duration
    half = n // 2
    t_half = float(times[half])
    src = analyze_range(clip)
    rows = []
    for train, edit, frames in [((0.0, t_half), (t_half, duration), range(half, n)),
                                ((t_half, duration), (0.0, t_half), range(0, half))]:
        out = tmp / f"{clip.stem}_{frames.start}.mkv"
        resynced = counted_sync(clip, clip, ExportSettings(output=str(out), codec="ffv1"),
                                ranges=[edit], settings=SyncSettings(train_range=train))
        rows.append(compare(clip, out, frames, src, analyze_range(out)) | {"resynced": resynced})
    return rows


def cross_dub(clip: Path, dub: Path, tmp: Path, sheet_dir: Path) -> tuple[float, float]:
    """(openness against the dub's envelope, share of frames re-synced)."""
    out = tmp / f"{clip.stem}_dub.mkv"
    resynced = counted_sync(clip, dub, ExportSettings(output=str(out), codec="ffv1"))
    result = analyze_range(out)
    source_faces = analyze_range(clip)
    with VideoReader(clip) as r:
        feats = dub_features(dub, r.times)
        picks = np.linspace(0, r.frame_count - 1, 6).astype(int)
        src_frames = [r.frame(int(i)).rgb() for i in picks]
    speech = feats.vad
    with VideoReader(out) as r:
        out_frames = [r.frame(int(i)).rgb() for i in picks]
    write_sheet(sheet_dir / f"crossdub_{clip.stem}.png", src_frames, out_frames,
                [source_faces.landmarks[i] for i in picks])
    o = openness(result.landmarks)
    r = pearson(o[: len(feats.envelope)], feats.envelope) if speech.any() else float("nan")
    return r, resynced


def write_sheet(path: Path, sources: list[np.ndarray], outputs: list[np.ndarray],
                landmarks: list[np.ndarray]) -> None:
    """Source and output face crops side by side, one row per frame."""
    rows = []
    for s, o, lm in zip(sources, outputs, landmarks):
        x0, y0 = np.maximum(lm.min(0) - 0.4 * face_scale(lm), 0).astype(int)
        x1, y1 = (lm.max(0) + 0.4 * face_scale(lm)).astype(int)
        pair = np.hstack([cv2.resize(im[y0:y1, x0:x1], (256, 256)) for im in (s, o)])
        rows.append(pair)
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", default=CLIPS)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    parser.add_argument("--parts", nargs="*", default=["self", "cross"],
                        choices=["self", "cross"],
                        help="which sections to run (default: all)")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"shared media not found at {SHARED}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    dub = SHARED / DUB
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["REDUB_CACHE_DIR"] = str(tmp / "cache")
        if "self" in args.parts:
            self_section(args.clips, tmp)
        if "cross" in args.parts:
            cross_section(args.clips, dub, tmp, args.out)
    return 0


def self_section(clips: list[str], tmp: Path) -> None:
    print("Self-reenactment (learn one half, re-sync the other to its own audio; both ways)")
    print(f"{'clip':24}{'half':>6}{'open r':>8}{'MAE':>7}{'lag':>5}{'PSNR':>7}{'SSIM':>7}"
          f"{'outside':>9}{'flicker':>9}{'resynced':>10}")
    for name in clips:
        for half, m in zip(("2nd", "1st"), self_reenact(SHARED / name, tmp)):
            print(f"{name:24}{half:>6}{m['r']:>8.2f}{m['mae']:>7.3f}{m['lag']:>5d}"
                  f"{m['psnr']:>7.1f}{m['ssim']:>7.3f}{m['outside']:>9d}{m['flicker']:>9.2f}"
                  f"{m['resynced']:>10.1%}", flush=True)


def cross_section(clips: list[str], dub: Path, tmp: Path, out: Path) -> None:
    print(f"\nCross-dub with {DUB}: openness against the dub's speech envelope "
          f"(contact sheets in {out}), and the share of frames re-synced")
    print(f"{'clip':24}{'open r':>8}{'resynced':>10}")
    for name in clips:
        r, resynced = cross_dub(SHARED / name, dub, tmp, out)
        print(f"{name:24}{r:>8.2f}{resynced:>10.1%}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
