"""SieveSync speed per stage and for the whole job at 1080p, and a contact sheet to look at.

    .venv/bin/python -m bench.sievesync [--clip PATH] [--frames 24] [--models tiny|full]

Networks have random weights (speed does not depend on them). ``tiny`` (default): MuseTalk's
tiny test set, LivePortrait's tiny test networks and an identity CodeFormer, so the figures are
the pipeline's own work (decode, alignment, warps, denoise, masks, blend, encode) with the
networks nearly free; ``full``: the full-size random MuseTalk of ``bench.models`` and stand-ins
of LivePortrait's and CodeFormer's real size and compute in their ONNX contracts
(``bench.liveportrait_standin``, ``bench.restorer_standin``), each exported once into
``bench/.cache`` (minutes). The output says which. Exported frames and ``sievesync_sheet.png``
(per frame: source | aligned 512 | result | difference x4) go to ``bench/out/``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from engine.audio.denoise import denoise
from engine.face import face_quad as fq
from engine.media.audio import read_audio
from engine.media.probe import probe
from engine.media.reader import VideoReader
from engine.pipeline import SyncSettings, prepare_sync, sync
from engine.render import ExportSettings

HERE = Path(__file__).resolve().parent
CACHE, OUT = HERE / ".cache" / "sievesync", HERE / "out"
SHARED = HERE.parent.parent / "shared" / "media"
MUSETALK = ("musetalk_whisper_encoder", "musetalk_vae_encoder", "musetalk_vae_decoder",
            "musetalk_unet_v15")


def _install(kind: str) -> str:
    """Random models imported into a model folder of their own; what they are, in words."""
    from engine.models.store import import_model
    from tests.liveportrait_models import install, write_models
    from tests.musetalk_factory import export_models, write_official_checkpoints

    os.environ["REDUB_MODELS_DIR"] = str(CACHE / f"models_{kind}")
    if kind == "full":
        from bench.models import _musetalk_models

        musetalk = _musetalk_models(HERE / ".cache" / "musetalk")
    else:
        musetalk = {m: CACHE / "musetalk_tiny" / f"{m}.onnx" for m in MUSETALK}
        if not all(p.exists() for p in musetalk.values()):
            with tempfile.TemporaryDirectory() as tmp:
                musetalk = export_models(write_official_checkpoints(Path(tmp)),
                                         CACHE / "musetalk_tiny")
    for model in MUSETALK:
        import_model(musetalk[model], model)
    if kind == "full":
        from bench.liveportrait_standin import write_models as write_full

        install(write_full(HERE / ".cache" / "liveportrait_full"))
        import_model(_codeformer_standin(HERE / ".cache" / "codeformer_full.onnx"), "codeformer")
        return ("full-size random MuseTalk; the LivePortrait and CodeFormer rows run "
                "stand-ins of the real networks' size and compute (bench.liveportrait_standin, "
                "bench.restorer_standin); random weights")
    (CACHE / "liveportrait").mkdir(parents=True, exist_ok=True)
    install(write_models(CACHE / "liveportrait"))
    import_model(_identity_codeformer(CACHE / "codeformer.onnx"), "codeformer")
    return "tiny random MuseTalk, tiny random LivePortrait, identity CodeFormer"


def _codeformer_standin(path: Path) -> Path:
    """``CodeFormerSized`` exported once in CodeFormer's contract."""
    if not path.exists():
        import torch

        from bench.restorer_standin import CodeFormerSized

        torch.manual_seed(0)
        with torch.no_grad():
            torch.onnx.export(CodeFormerSized().eval(),
                              (torch.rand(1, 3, 512, 512) * 2 - 1,
                               torch.ones(1, dtype=torch.float64)),
                              str(path), input_names=["input", "weight"],
                              output_names=["output"], opset_version=17, dynamo=False)
    return path


def _identity_codeformer(path: Path) -> Path:
    """CodeFormer's contract, ``input`` x ``weight`` (identity at fidelity 1)."""
    import onnx
    from onnx import TensorProto as T, helper as h

    image = [1, 3, 512, 512]
    graph = h.make_graph([h.make_node("Cast", ["weight"], ["w"], to=T.FLOAT),
                          h.make_node("Mul", ["input", "w"], ["output"])], "codeformer",
                         [h.make_tensor_value_info("input", T.FLOAT, image),
                          h.make_tensor_value_info("weight", T.DOUBLE, [1])],
                         [h.make_tensor_value_info("output", T.FLOAT, image)])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _timed(label: str, frames: int, step) -> object:
    t0 = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - t0
    print(f"{label:<28} {frames / seconds:8.2f} frames/s  ({seconds:.2f} s for {frames})",
          flush=True)
    return result


def _stages(session, frames: int, dub: str) -> None:
    """Each stage of the prepared generator on the first ``frames`` edited frames.
    (Reaches into the generator's stage methods: the bench times them one by one.)"""
    gen, a = session._generator, session.analysis
    ks = np.flatnonzero(session.edit & a.found)[:frames]
    n = len(ks)
    with VideoReader(session.video) as reader:
        _timed("decode", n, lambda: [reader.frame(a.start + int(k)) for k in ks])
    faces = _timed("align (decode + warp)", n,
                   lambda: np.stack([gen._aligned(a.start + int(k), gen._matrices[k])
                                     for k in ks]))
    landmarks = fq.aligned_landmarks(gen._matrices[ks], a.landmarks[ks])
    neutral = _timed("neutralise (LivePortrait)", n,
                     lambda: gen._liveportrait.neutralise(faces, landmarks))
    drawn = _timed("MuseTalk", n, lambda: gen._lipsync(neutral, landmarks, gen._times[ks]))
    restored = _timed("CodeFormer (+ FFHQ warps)", n,
                      lambda: [gen._restore(f, lm) for f, lm in zip(drawn, landmarks)])
    with VideoReader(session.video) as reader:
        pictures = [reader.frame(a.start + int(k)) for k in ks]
        boxes = [tuple(int(v) for v in a.crop_boxes[k]) for k in ks]
        sources = [np.array(p.rgb_region(*b)) for p, b in zip(pictures, boxes)]
    _timed("un-align (crop box)", n,
           lambda: [fq.unalign(r, gen._matrices[k], s, b, a.landmarks[k])
                    for r, k, s, b in zip(restored, ks, sources, boxes)])
    samples = read_audio(dub, rate=16000, channels=1).samples
    t0 = time.perf_counter()
    denoise(samples)
    print(f"{'denoise (whole dub)':<28} {len(samples) / 16000 / (time.perf_counter() - t0):8.1f}"
          " x real time", flush=True)


def _sheet(session, count: int, path: Path) -> None:
    """Per frame: source face | aligned 512 (as MuseTalk gets it) | result | difference x4."""
    gen, a = session._generator, session.analysis
    ks = np.flatnonzero(session.edit & a.found)
    rows = []
    with VideoReader(session.video) as reader:
        for k in ks[np.linspace(0, len(ks) - 1, count).astype(int)]:
            frame = reader.frame(a.start + int(k))
            x0, y0, x1, y1 = (int(v) for v in a.crop_boxes[k])
            source = np.array(frame.rgb_region(x0, y0, x1, y1))
            result = np.array(session.render_frame(frame).rgb_region(x0, y0, x1, y1))
            diff = np.clip(np.abs(result.astype(int) - source) * 4, 0, 255).astype(np.uint8)
            aligned = gen._aligned(a.start + int(k), gen._matrices[k])
            tiles = [cv2.resize(t, (384, 384), interpolation=cv2.INTER_AREA)
                     for t in (source, aligned, result, diff)]
            rows.append(np.concatenate(tiles, 1))
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=str(SHARED / "latentsync_demo3_1080x1920.mp4"))
    parser.add_argument("--dub", default=str(SHARED / "speech_radio31_16k.wav"))
    parser.add_argument("--start", type=float, default=2.0, help="seconds into the clip")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--models", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--sheet", type=int, default=4, help="contact sheet rows (0: none)")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"models: {_install(args.models)}; CPU", flush=True)
    rate = float(probe(args.clip).video[0].frame_rate)
    span = (args.start, args.start + (args.frames - 0.5) / rate)
    # SieveSync learns nothing from the footage: the analysis covers the edited span only.
    settings = SyncSettings(backend="sievesync", train_range=span)
    print(f"clip: {args.clip}, {args.frames} frames from {args.start} s", flush=True)
    t0 = time.perf_counter()
    with prepare_sync(args.clip, args.dub, ranges=[span], settings=settings) as session:
        print(f"{'prepare (analysis, audio)':<28} {time.perf_counter() - t0:8.2f} s", flush=True)
        _stages(session, args.frames, args.dub)
        session._generator._grid.clear()
        with VideoReader(args.clip) as reader:
            frames = [reader.frame(int(i)) for i in session.edited_frames()]
        _timed("whole pipeline per frame", len(frames),
               lambda: [session.render_frame(f) for f in frames])
        if args.sheet:
            _sheet(session, args.sheet, OUT / "sievesync_sheet.png")
            # The way back alone: MuseTalk's faces given back with a colour cast and less
            # contrast (a real model's drift), which must not show as a seam or a step.
            gen = session._generator
            gen._liveportrait = None  # random LivePortrait weights draw no face either
            gen._musetalk.draw = lambda crops, times: np.clip(
                (crops - 128.0) * 0.85 + 128 + (25.0, 0.0, -15.0), 0, 255).astype(np.uint8)
            gen._grid.clear()
            session._crops.clear()
            _sheet(session, args.sheet, OUT / "sievesync_sheet_cast.png")
            print(f"contact sheets: {OUT / 'sievesync_sheet.png'}, "
                  f"{OUT / 'sievesync_sheet_cast.png'} (no LivePortrait, MuseTalk replaced by a colour cast)")
    t0 = time.perf_counter()
    result = sync(args.clip, args.dub, ExportSettings(output=str(OUT / "sievesync.mkv")),
                  ranges=[span], settings=settings)
    print(f"{'export, whole clip':<28} {result.frames / (time.perf_counter() - t0):8.2f} frames/s"
          f"  ({result.frames} frames, {args.frames} edited, H.264)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
