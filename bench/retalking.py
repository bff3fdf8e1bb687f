"""Video ReTalking (issue #16): each network's speed, the whole job on a real clip, the
complaints about the original measured, and a contact sheet to look at.

    .venv/bin/python -m bench.retalking [--clip PATH] [--frames 24] [--models tiny|full]

Networks have random weights (speed does not depend on them): ``tests.retalking_factory`` writes
the release's files, ``installer.export_retalking`` converts them once into
``bench/.cache/retalking/<models>`` (``full``: minutes, ENet about two of them). ``tiny`` runs
the same code paths at toy widths, so its figures are the pipeline's own work. GPEN-BFR-512 and
GFPGAN v1.4 are not made by that exporter: ``full`` runs ``bench.restorer_standin.GFPGANSized``
(GFPGAN v1.4's size and compute in the restorer contract) for both, ``tiny`` an identity
network. The output says which.

1. Each network at full size on the CPU and on every GPU provider this onnxruntime offers (the
   engine's choice, ``engine.models.session``): frames per second at batch 1 and at the batch
   the engine runs it with, after a warm-up.
2. ``redub sync --backend retalking --stabilizer dnet --restorer gfpgan`` on ``--frames`` frames
   of the clip, with the lower-face mask, then the mouth mask (a second preparation: the 3D
   coefficients come from the cache), the caches empty at the start. Printed: face analysis,
   3D coefficients, render (the edited frames, decoded beforehand, on two threads as the
   export renders) and total frames per second, against the original's ~0.4 fps on a T4-class
   GPU (8 fps: 20 times that). Each job is then exported as FFV1 to ``bench/out/`` so the
   comparison with the source is exact.
3. The complaints about the original, measured: pixels changed outside the generator's crop box
   and outside the blend mask (both must be 0); faceless frames passed through bit-identical
   (two frames blanked in a copy of the stretch where the clip has none); the batches D-Net ran;
   the coefficients computed once per clip and cached.
4. ``bench/out/retalking_sheet.png``: per frame the source | D-Net's neutral reference (ENet's
   framing) | ENet's face | the final frame | the difference x4, the crop box outlined; and
   ``retalking_sheet_cast.png``, the same with ENet answering a colour cast of the plain crop,
   to judge the way back into the frame (placement, seams) where random weights draw nothing.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from engine.face import face3d
from engine.face.analysis import analyze_range
from engine.face.refine import refine_landmarks
from engine.lipsync import retalking
from engine.media.frame import Frame, planes_from_av
from engine.media.probe import probe
from engine.media.reader import VideoReader
from engine.models.session import CPU, session_for
from engine.models.store import import_model, model_path
from engine.paths import cache_dir
from engine.pipeline import SyncSession, SyncSettings, prepare_sync
from engine.render import ExportSettings, render
from engine.stabilize import dnet

HERE = Path(__file__).resolve().parent
CACHE, OUT = HERE / ".cache" / "retalking", HERE / "out"
SHARED = HERE.parent.parent / "shared" / "media"
NETWORKS = ("retalking_face3d", "retalking_dnet", "retalking_enet", "face_parsing_parsenet")
RESTORERS = ("gpen_bfr_512", "gfpgan_1.4")
WATCHED = ("retalking_face3d", "retalking_dnet", "retalking_enet")  # batch sizes printed
ORIGINAL_FPS = 0.4  # the official inference on a T4-class GPU


def _install(kind: str) -> str:
    """The networks and restorers imported into a model folder of their own; what they are."""
    os.environ["REDUB_MODELS_DIR"] = str(CACHE / kind / "models")
    for model_id, path in _networks(kind).items():
        import_model(path, model_id)
    if kind == "full":
        from bench.models import _export_gfpgan_standin

        restorer = HERE / ".cache" / "gfpgan_standin_512.onnx"
        if not restorer.exists():
            _export_gfpgan_standin(restorer)
        words = ("full-size Video ReTalking networks; gpen_bfr_512 and gfpgan_1.4 both run a "
                 "stand-in of GFPGAN v1.4's size and compute (bench.restorer_standin)")
    else:
        from bench.models import _identity_restorer

        restorer = _identity_restorer(CACHE / "identity_restorer.onnx")
        words = "tiny Video ReTalking networks; identity gpen_bfr_512 and gfpgan_1.4"
    for model_id in RESTORERS:
        import_model(restorer, model_id)
    return words + "; random weights"


def _networks(kind: str) -> dict[str, Path]:
    """The four ONNX files from random release files, exported once: model id -> file."""
    folder = CACHE / kind
    paths = {m: folder / f"{m}.onnx" for m in NETWORKS}
    if all(p.exists() for p in paths.values()):
        return paths
    from installer.export_retalking import export
    from tests.retalking_factory import write_official_checkpoints

    print(f"exporting random {kind} Video ReTalking networks to {folder} ...", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        for e in export(write_official_checkpoints(Path(tmp), tiny=kind == "tiny"), folder):
            print(f"  {e.model_id}: max |onnxruntime - torch| {e.difference:.1e} "
                  f"(tolerance {e.tolerance:.0e})", flush=True)
    return paths


# -- 1. each network ---------------------------------------------------------------------------

def _throughput(seconds: float) -> None:
    from bench.models import Bench

    bench = Bench(seconds=seconds, batches=())
    rng = np.random.default_rng(0)

    def uniform(lo: float, hi: float, *shape: int) -> np.ndarray:
        return rng.uniform(lo, hi, shape).astype(np.float32)

    if len(bench.providers()) == 1:
        print("no GPU provider: onnxruntime offers only the CPU here")
    print(f"{'network':<22} {'side':>4} {'provider':<26} {'batch':>5} {'frames/s':>9}")
    for provider in bench.providers():
        enet_batch = retalking.CPU_BATCH if provider == CPU else retalking.GPU_BATCH
        rows = [  # model, side, feed for a batch, the batches (1 and the engine's)
            ("retalking_face3d", 224, lambda b: {"image": uniform(0, 1, b, 3, 224, 224)},
             (1, face3d.BATCH)),
            ("retalking_dnet", 256, lambda b: {"image": uniform(-1, 1, b, 3, 256, 256),
                                               "coeffs": uniform(-1, 1, b, 73, 26)},
             (1, dnet._BATCH)),
            ("retalking_enet", 384, lambda b: {"audio": uniform(-4, 4, b, 1, 80, 16),
                                               "face": uniform(0, 1, b, 6, 384, 384)},
             (1, enet_batch)),
            ("face_parsing_parsenet", 512, lambda b: {"image": uniform(-1, 1, b, 3, 512, 512)},
             (1,)),  # the mouth mask parses one frame at a time
            ("gpen_bfr_512", 512, lambda b: {"input": uniform(-1, 1, 1, 3, 512, 512)}, (1,)),
        ]
        for model_id, side, feed, batches in rows:
            session = session_for(model_path(model_id), model_id, [provider])
            for batch in batches:
                inputs = feed(batch)
                fps = bench.fps(lambda: session.run(inputs), batch)
                note = f"  ({session.fallback})" if session.fallback else ""
                print(f"{model_id:<22} {side:>4} {session.providers[0]:<26} {batch:>5} "
                      f"{fps:>9.2f}{note}", flush=True)


# -- 2, 3. the whole job -----------------------------------------------------------------------

@contextmanager
def _watching() -> Iterator[dict]:
    """What the job does, recorded: each 3D-coefficient call's seconds, the batch sizes the
    watched networks ran, and the mask each edited frame was written through (clip frame ->
    (x, y, bool mask)). Reaches into the engine's modules; everything is put back after."""
    seen: dict = {"coeffs": [], "batches": {m: [] for m in WATCHED}, "masks": {},
                  "providers": {}}
    lock = threading.Lock()
    compute, write = face3d.clip_coefficients, Frame.with_region

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return compute(*args, **kwargs)
        finally:
            seen["coeffs"].append(time.perf_counter() - t0)

    def written(self, x, y, patch, mask=None):
        covered = np.ones(patch.shape[:2], bool) if mask is None else mask > 0
        with lock:
            seen["masks"][self.index] = (x, y, covered)
        return write(self, x, y, patch, mask)

    # The engine opens these with its default providers: the same cached sessions.
    sessions = [session_for(model_path(m), m) for m in WATCHED]
    for model_id, session in zip(WATCHED, sessions):
        seen["providers"][model_id] = session.providers[0]

        def counted(feed, run=session.run, sizes=seen["batches"][model_id]):
            sizes.append(len(next(iter(feed.values()))))
            return run(feed)
        session.run = counted
    face3d.clip_coefficients, Frame.with_region = timed, written
    try:
        yield seen
    finally:
        face3d.clip_coefficients, Frame.with_region = compute, write
        for session in sessions:
            del session.run


def _render(session: SyncSession) -> float:
    """Seconds to re-sync the edited frames, decoded beforehand, on two threads as the export
    renders (an export's own figure would include its encoder, which shares the cores)."""
    with VideoReader(session.video) as reader:
        frames = [reader.frame(int(i)) for i in session.edited_frames()]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(session.render_frame, frames))
    return time.perf_counter() - t0


def _export(session: SyncSession, out: Path) -> tuple[float, int]:
    """The session's job exported as FFV1 (the generated crops from :func:`_render`, up to
    the 64 the session keeps, are blended again): seconds, frames written."""
    t0 = time.perf_counter()
    result = render(session.video, ExportSettings(output=str(out), codec="ffv1"),
                    dub=session.dub, ranges=session.ranges, edit=session.render_frame)
    return time.perf_counter() - t0, result.frames


def _footprint(changed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Which samples of a subsampled plane of ``shape`` a full-resolution map touches."""
    sy, sx = -(-changed.shape[0] // shape[0]), -(-changed.shape[1] // shape[1])
    padded = np.zeros((shape[0] * sy, shape[1] * sx), bool)
    padded[:changed.shape[0], :changed.shape[1]] = changed
    return padded.reshape(shape[0], sy, shape[1], sx).any(axis=(1, 3))


def _compare(source: str, output: Path, session: SyncSession, masks: dict) -> dict:
    """Source and export frame by frame: pixels changed outside the crop box and outside the
    mask in edited frames (luma pixels and chroma samples), frames changed that were not
    edited, and which frames changed."""
    a = session.analysis
    counts = {"box_luma": 0, "box_chroma": 0, "mask_luma": 0, "mask_chroma": 0,
              "unedited": 0, "changed": set()}
    with av.open(source) as src, av.open(str(output)) as out:
        for i, (s, o) in enumerate(zip(src.decode(video=0), out.decode(video=0))):
            diffs = [(p != q).any(axis=2) if p.ndim == 3 else p != q
                     for p, q in zip(planes_from_av(s), planes_from_av(o))]
            if not any(d.any() for d in diffs):
                continue
            counts["changed"].add(i)
            if i not in masks:
                counts["unedited"] += 1
                continue
            h, w = diffs[0].shape
            x0, y0 = np.floor(a.crop_boxes[i - a.start][:2]).astype(int)
            x1, y1 = np.ceil(a.crop_boxes[i - a.start][2:]).astype(int)
            box = np.zeros((h, w), bool)
            box[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
            x, y, covered = masks[i]
            masked = np.zeros((h, w), bool)
            masked[y:y + covered.shape[0], x:x + covered.shape[1]] = covered
            counts["box_luma"] += int((diffs[0] & ~box).sum())
            counts["mask_luma"] += int((diffs[0] & ~masked).sum())
            for d in diffs[1:]:
                counts["box_chroma"] += int((d & ~_footprint(box, d.shape)).sum())
                counts["mask_chroma"] += int((d & ~_footprint(masked, d.shape)).sum())
    return counts


def _settings(mask: str, span: tuple[float, float] | None) -> SyncSettings:
    return SyncSettings(backend="retalking", stabilizer="dnet", restorer="gfpgan",
                        train_range=span, mask=replace(SyncSettings().mask, kind=mask))


def _job(label: str, clip: str, dub: str, span: tuple[float, float], settings: SyncSettings,
         analysed: float | None, sheet: int) -> list[int]:
    """Prepare and export one job, printing its figures and checks; the range's faceless
    frames."""
    out = OUT / f"retalking_{label}.mkv"
    session = None
    try:
        with _watching() as seen:
            t0 = time.perf_counter()
            session = prepare_sync(clip, dub, ranges=[span], settings=settings)
            prepared = time.perf_counter() - t0
            if session.edited_frames().size == 0:
                raise SystemExit(f"{clip}: no face to re-sync in {span[0]:.2f}-{span[1]:.2f} "
                                 f"s ({'; '.join(session.notes)})")
            edited_s = _render(session)
            whole_s, written = _export(session, out)
        n = len(session.edited_frames())
        coeffs = seen["coeffs"]
        print(f"\n[{label}] {n} edited frames; networks on "
              + ", ".join(f"{m} {p}" for m, p in seen["providers"].items()), flush=True)
        if analysed is not None:
            print(f"  {'face analysis (+ repair)':<34} {analysed:8.2f} s  "
                  f"({n / analysed:.1f} frames/s)")
        print(f"  {'prepare (all before the render)':<34} {prepared:8.2f} s")
        runs = seen["batches"]["retalking_face3d"]
        print(f"  {'3D coefficients, in prepare':<34} "
              + ", ".join(f"{c:8.3f} s" for c in coeffs)
              + (f"  (computed: face3d batches {runs})" if runs
                 else "  (cache hit: nothing decoded, face3d not run)"))
        print(f"  {'render, edited frames (2 threads)':<34} {n / edited_s:8.2f} frames/s"
              f"  ({edited_s:.2f} s)")
        total = (analysed or 0.0) + prepared + edited_s
        print(f"  {'total (analysis + prepare + render)':<34} {n / total:8.2f} frames/s")
        print(f"  {'export, whole clip (FFV1)':<34} {written / whole_s:8.2f} frames/s  "
              f"({written} frames; the edited ones blended again from kept crops)")
        print(f"  D-Net batches {seen['batches']['retalking_dnet']}, "
              f"ENet batches {seen['batches']['retalking_enet']}")
        counts = _compare(clip, out, session, seen["masks"])
        print(f"  changed outside the crop box: {counts['box_luma']} luma pixels, "
              f"{counts['box_chroma']} chroma samples; outside the mask: "
              f"{counts['mask_luma']} luma, {counts['mask_chroma']} chroma; frames changed "
              f"outside the edit: {counts['unedited']}; edited frames changed: "
              f"{len(counts['changed'] & seen['masks'].keys())} of {n}")
        a = session.analysis
        inside = (a.times >= span[0] - 1e-6) & (a.times < span[1] - 1e-6)
        faceless = (np.flatnonzero(inside & ~a.found) + a.start).tolist()
        same = [i for i in faceless if i not in counts["changed"]]
        print(f"  faceless frames in the range: {faceless or 'none'}"
              + (f"; bit-identical: {len(same)} of {len(faceless)}" if faceless else ""))
        if sheet:
            _sheet(session, sheet, OUT / "retalking_sheet.png")
            _cast_sheet(session, sheet, OUT / "retalking_sheet_cast.png")
            print(f"  contact sheets: {OUT / 'retalking_sheet.png'}, "
                  f"{OUT / 'retalking_sheet_cast.png'} (ENet replaced by a colour cast of "
                  "the plain crop)")
    finally:
        if session is not None:
            session.close()
    return faceless


def _blanked(clip: str, start: float, frames: int, path: Path) -> tuple[Path, list[int]]:
    """The stretch of ``clip`` as a clip of its own (H.264, near-lossless), two frames a third
    of the way in black (no face there); the blanked frame numbers."""
    info = probe(clip).video[0]
    first = int(round(start * float(info.frame_rate)))
    blank = [frames // 3, frames // 3 + 1]
    with VideoReader(clip) as reader, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(info.frame_rate).limit_denominator(1001))
        stream.width, stream.height = info.width, info.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "12", "bf": "0"}
        for i, frame in enumerate(reader.frames(first, first + frames)):
            rgb = frame.rgb()
            picture = np.zeros_like(rgb) if i in blank else np.ascontiguousarray(rgb)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path, blank


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` scaled into a ``side`` square, black bars where its aspect differs."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    tile = np.zeros((side, side, 3), np.uint8)
    y, x = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
    tile[y:y + small.shape[0], x:x + small.shape[1]] = small
    return tile


SHEET = ("source", "D-Net reference", "ENet face", "final frame", "difference x4")


def _sheet(session: SyncSession, count: int, path: Path, labels: tuple[str, ...] = SHEET,
           side: int = 320) -> None:
    """Per frame: the source around the crop box | D-Net's neutral reference at ENet's framing
    | ENet's face | the final frame there | difference x4 with the crop box outlined.
    (Reaches into the generator for its reference stabilizer and ENet's faces.)"""
    gen, a = session._generator, session.analysis
    ks = np.flatnonzero(session.edit & a.found)
    ks = ks[np.linspace(0, len(ks) - 1, min(count, len(ks))).astype(int)]
    head = np.zeros((28, side * len(labels), 3), np.uint8)
    for i, text in enumerate(labels):
        cv2.putText(head, text, (i * side + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255), 1, cv2.LINE_AA)
    rows = [head]
    with VideoReader(session.video) as reader:
        for k in (int(k) for k in ks):
            frame = reader.frame(a.start + k)
            x0, y0 = np.floor(a.crop_boxes[k][:2]).astype(int)
            x1, y1 = np.ceil(a.crop_boxes[k][2:]).astype(int)
            margin = (x1 - x0) // 6  # room around the box: nothing there may change
            v0, w0 = max(x0 - margin, 0), max(y0 - margin, 0)
            v1, w1 = min(x1 + margin, frame.width), min(y1 + margin, frame.height)
            source = np.array(frame.rgb_region(v0, w0, v1, w1))
            result = np.array(session.render_frame(frame).rgb_region(v0, w0, v1, w1))
            diff = np.clip(np.abs(result.astype(int) - source) * 4, 0, 255).astype(np.uint8)
            cv2.rectangle(diff, (x0 - v0, y0 - w0), (x1 - v0 - 1, y1 - w0 - 1), (255, 160, 0),
                          max(1, (x1 - x0) // 150))
            reference = gen._reference.crops([frame], [k], retalking.FRAMING)[0].image
            face = gen._grid.get(k)[0]
            rows.append(np.concatenate([_fit(t, side) for t in
                                        (source, reference, face, result, diff)], 1))
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))


def _cast_sheet(session: SyncSession, count: int, path: Path) -> None:
    """The way back alone, where random weights draw nothing to judge it by: ENet answers with
    its reference, the plain crop (no D-Net, GPEN or restorer), given a colour cast and less
    contrast (a real model's drift). The face must come back in place: no second edge, no
    seam, no step at the crop box."""
    from engine.restore.backend import NoRestorer

    gen = session._generator
    reference, restorer = gen._reference, session._restorer
    bgr = np.array([-15.0, 0.0, 25.0], np.float32)[None, :, None, None] / 255  # RGB (25, 0, -15)
    gen.session.run = lambda feed: [(feed[gen._face_input][:, 3:] - 0.5) * 0.85 + 0.5 + bgr]
    gen._enhancer.run_aligned = lambda face: face
    gen._reference, session._restorer = gen._original, NoRestorer()
    for cache in (gen._grid, session._crops, session._mouths):
        cache.clear()
    try:
        _sheet(session, count, path, ("source", "reference: plain crop", "ENet: cast reference",
                                      "final frame", "difference x4"))
    finally:
        del gen.session.run, gen._enhancer.run_aligned
        gen._reference, session._restorer = reference, restorer


def _pipeline(args: argparse.Namespace) -> None:
    info = probe(args.clip).video[0]
    rate = float(info.frame_rate)
    span = (args.start, args.start + (args.frames - 0.5) / rate)
    print(f"\nclip: {args.clip} ({info.width}x{info.height}), {args.frames} frames from "
          f"{args.start} s; dub {args.dub}; restorer gfpgan; caches start empty", flush=True)
    # The analysis prepare_sync makes (its span: the edit, also the footage to learn from),
    # timed on its own; prepare_sync then reads it from the cache.
    t0 = time.perf_counter()
    analysis = analyze_range(args.clip, max(span[0], 0.0), min(span[1], info.duration))
    refine_landmarks(args.clip, analysis)
    analysed = time.perf_counter() - t0
    faceless = _job("lower_face", args.clip, args.dub, span, _settings("lower_face", span),
                    analysed, args.sheet)
    _job("mouth", args.clip, args.dub, span, _settings("mouth", span), None, 0)
    cached = sorted(p.name for p in cache_dir().rglob("*.face3d*.npy"))
    print(f"\ncoefficient cache files: {cached or 'none'}")
    if not faceless:
        with tempfile.TemporaryDirectory() as tmp:
            copy, blank = _blanked(args.clip, args.start, args.frames, Path(tmp) / "blanked.mp4")
            print(f"no faceless frame in the range: frames {blank} blanked in a copy of it",
                  flush=True)
            duration = probe(copy).video[0].duration
            _job("blanked", str(copy), args.dub, (0.0, duration),
                 _settings("lower_face", None), None, 0)
    print(f"\nthe original Video ReTalking: ~{ORIGINAL_FPS} fps on a T4-class GPU; "
          f"20x that is {20 * ORIGINAL_FPS:.0f} fps (the target on a GPU)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=str(SHARED / "hdtf_aoc_512.mp4"))
    parser.add_argument("--dub", default=str(SHARED / "speech_radio31_16k.wav"))
    parser.add_argument("--start", type=float, default=1.0, help="seconds into the clip")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--models", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="timed seconds per network figure")
    parser.add_argument("--sheet", type=int, default=4, help="contact sheet rows (0: none)")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="redub-bench-cache-") as cache:
        os.environ["REDUB_CACHE_DIR"] = cache  # cold: the first job computes everything
        print(f"models: {_install(args.models)}", flush=True)
        _throughput(args.seconds)
        _pipeline(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
