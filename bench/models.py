"""Neural stage throughput: frames per second per model, provider and batch size.

Full-size architectures with random weights (the speed of a network does not depend on its
weights), exported once to ``bench/.cache/`` (needs the ``export`` extra, torch), run through
the engine's own sessions on the CPU and on every GPU provider the installed onnxruntime has::

    .venv/bin/python -m bench.models [--seconds 3] [--batches 1,8,16] [--stages musetalk]

Each stage is one function in ``STAGES`` taking the :class:`Bench` and yielding :class:`Row`s;
adding a model means adding a function.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterable, Iterator

import numpy as np

from engine.face import geometry as geo
from engine.lipsync.wav2lip import FRAMING
from engine.media.frame import Frame
from engine.models.session import CPU, ModelSession, providers, session_for
from engine.stabilize.backend import create_stabilizer

CACHE = Path(__file__).resolve().parent / ".cache"


@dataclass(frozen=True)
class Row:
    stage: str
    model: str
    provider: str
    batch: int
    fps: float  # frames (model inputs) per second
    note: str = ""


@dataclass(frozen=True)
class Bench:
    seconds: float  # timed per measurement, after one warm-up run
    batches: tuple[int, ...]

    def providers(self) -> list[str]:
        """CPU first, then each GPU provider this onnxruntime build offers."""
        gpus = [name for name, _ in providers() if name != CPU]
        return [CPU] + gpus

    def fps(self, step: Callable[[], None], frames: int) -> float:
        """Frames per second of ``step`` (which handles ``frames`` frames), repeated."""
        step()
        done, t0 = 0, time.perf_counter()
        while done == 0 or time.perf_counter() - t0 < self.seconds:
            step()
            done += frames
        return done / (time.perf_counter() - t0)

    def session(self, path: Path, what: str, provider: str) -> ModelSession:
        return session_for(path, what, [provider])


def wav2lip_generator(bench: Bench) -> Iterator[Row]:
    """Wav2Lip 96x96 (36 M parameters): mel windows and 6-channel faces in, faces out."""
    path = CACHE / "wav2lip_random_96.onnx"
    if not path.exists():
        try:
            _export_random_wav2lip(path)
        except ModuleNotFoundError as exc:
            yield Row("generator", "wav2lip_96", "-", 0, float("nan"),
                      f"{exc.name} missing: pip install -e '.[export]' to build the model")
            return
    rng = np.random.default_rng(0)
    for provider in bench.providers():
        session = bench.session(path, "wav2lip benchmark model", provider)
        note = session.fallback or ""
        for batch in bench.batches:
            feed = {"source": rng.uniform(-4, 4, (batch, 1, 80, 16)).astype(np.float32),
                    "target": rng.uniform(0, 1, (batch, 6, 96, 96)).astype(np.float32)}
            yield Row("generator", "wav2lip_96", session.providers[0], batch,
                      bench.fps(lambda: session.run(feed), batch), note)


def musetalk_generator(bench: Bench) -> Iterator[Row]:
    """MuseTalk v1.5 at full size, per frame: the VAE encoder on the masked and the whole
    256x256 crop, the UNet once and the VAE decoder (the Whisper encoder runs once per 30 s of
    dub, not per frame: its own row). fp32 on the CPU, the fp16 files on GPU providers."""
    try:
        models = _musetalk_models(CACHE / "musetalk")
    except ModuleNotFoundError as exc:
        yield Row("generator", "musetalk_v15", "-", 0, float("nan"),
                  f"{exc.name} missing: pip install -e '.[export]' to build the models")
        return
    rng = np.random.default_rng(4)
    for provider in bench.providers():
        suffix = "" if provider == CPU else "_fp16"
        encoder, unet, decoder = (bench.session(models[f"musetalk_{name}{suffix}"],
                                                f"MuseTalk {name} benchmark model", provider)
                                  for name in ("vae_encoder", "unet_v15", "vae_decoder"))
        note = encoder.fallback or unet.fallback or decoder.fallback or ""
        for batch in bench.batches:
            crops = rng.uniform(-1, 1, (2 * batch, 3, 256, 256)).astype(np.float32)
            audio = rng.normal(0, 1, (batch, 50, 384)).astype(np.float32)

            def step() -> None:
                latents = encoder.run({"image": crops})[0]
                both = np.concatenate([latents[:batch], latents[batch:]], axis=1)
                decoder.run({"latents": unet.run({"latents": both, "audio": audio})[0]})
            fps = bench.fps(step, batch)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB
            yield Row("generator", "musetalk_v15" + suffix, unet.providers[0], batch, fps,
                      "; ".join(filter(None, [note, f"process peak {peak:.1f} GB so far"])))
        whisper = bench.session(models["musetalk_whisper_encoder" + suffix],
                                "Whisper benchmark model", provider)
        mel = rng.normal(0, 1, (1, 80, 3000)).astype(np.float32)
        # frames/s here: video frames (25 fps) of dub encoded per second, 30 s per run
        yield Row("audio", "whisper_tiny" + suffix, whisper.providers[0], 1,
                  bench.fps(lambda: whisper.run({"input_features": mel}), 750),
                  "30 s of dub per run, counted as 750 frames at 25 fps")


def geometric_stabilizer(bench: Bench) -> Iterator[Row]:
    """The default stabilizer: a 96x96 crop of a 400-pixel face from a 1080p YUV frame."""
    rng = np.random.default_rng(1)
    planes = (rng.integers(16, 235, (1080, 1920), np.uint8),
              rng.integers(16, 240, (540, 960), np.uint8),
              rng.integers(16, 240, (540, 960), np.uint8))
    frames = [Frame(i, i / 25, i, "yuv420p", 1920, 1080, planes) for i in range(8)]
    face = geo.TEMPLATE_68 * 400 + (760, 300)
    stabilizer = create_stabilizer("geometric")
    # The stage reads only the analysis's transforms.
    stabilizer.prepare(SimpleNamespace(
        transforms=np.repeat(geo.to_canonical(face)[None], len(frames), 0)))
    indices = list(range(len(frames)))
    yield Row("stabilizer", "geometric", "numpy/OpenCV", len(frames),
              bench.fps(lambda: stabilizer.crops(frames, indices, FRAMING), len(frames)))


def gfpgan_restorer(bench: Bench) -> Iterator[Row]:
    """GFPGAN v1.4 at 512, one face per call as the public files fix it: the real
    GFPGANv1Clean with random weights where the gfpgan package imports (or its export is
    cached), else the stand-in of its size in ``bench/restorer_standin.py``."""
    from installer.export_gfpgan import CannotRun

    path, model, note = CACHE / "gfpgan_random_512.onnx", "gfpgan_1.4", ""
    try:
        if not path.exists():
            try:
                _export_random_gfpgan(path)
            except CannotRun:
                path, model = CACHE / "gfpgan_standin_512.onnx", "gfpgan-size"
                note = "stand-in of GFPGAN's size: the gfpgan package does not import"
                if not path.exists():
                    _export_gfpgan_standin(path)
    except ModuleNotFoundError as exc:
        yield Row("restorer", model, "-", 1, float("nan"),
                  f"{exc.name} missing: pip install -e '.[export]' to build the model")
        return
    face = np.random.default_rng(2).uniform(-1, 1, (1, 3, 512, 512)).astype(np.float32)
    for provider in bench.providers():
        session = bench.session(path, "restorer benchmark model", provider)
        yield Row("restorer", model, session.providers[0], 1,
                  bench.fps(lambda: session.run({"input": face}), 1), session.fallback or note)


def restorer_around_model(bench: Bench) -> Iterator[Row]:
    """The restorer stage's own work per frame, model excluded (an identity network stands
    in): FFHQ alignment of a 400-pixel face in a 1080p frame, the warp back over the mouth
    region, its masks and the mix."""
    from engine.face.analysis import FaceFrame, Flag
    from engine.lipsync.backend import Generated
    from engine.mask import face_scale, landmark_polygon
    from engine.models.store import import_model
    from engine.restore.backend import create_restorer

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (1080, 1920, 3), np.uint8)
    frame = Frame(0, 0.0, 0, "rgb24", 1920, 1080, (rgb,), _rgb=rgb)
    marks = geo.TEMPLATE_68 * 400 + (760, 300)
    face = FaceFrame(0, 0.0, Flag(0), 1.0, np.zeros(4), marks, geo.five_points(marks),
                     geo.to_canonical(marks), np.zeros(3), np.zeros(4))
    poly, pad = landmark_polygon(marks, "lower_face"), 0.3 * face_scale(marks)
    x0, y0 = (int(v) for v in poly.min(0) - pad)
    x1, y1 = (int(v) for v in poly.max(0) + pad)
    gen = Generated((x0, y0, x1, y1), rgb[y0:y1, x0:x1].copy(), marks)
    with tempfile.TemporaryDirectory() as folder:
        previous = os.environ.get("REDUB_MODELS_DIR")
        os.environ["REDUB_MODELS_DIR"] = folder
        try:
            import_model(_identity_restorer(Path(folder) / "identity.onnx"), "gfpgan_1.4")
            restorer = create_restorer("gfpgan", strength=0.8)
            fps = bench.fps(lambda: restorer.restore(frame, gen, face), 1)
        finally:
            if previous is None:
                del os.environ["REDUB_MODELS_DIR"]
            else:
                os.environ["REDUB_MODELS_DIR"] = previous
    yield Row("restorer", "around model", "numpy/OpenCV", 1, fps,
              f"1080p frame, {x1 - x0}x{y1 - y0} mouth region")


STAGES: list[Callable[[Bench], Iterable[Row]]] = [wav2lip_generator, musetalk_generator,
                                                  geometric_stabilizer,
                                                  gfpgan_restorer, restorer_around_model]


def _export_random_wav2lip(path: Path) -> None:
    import torch

    from installer.export_wav2lip import export
    from installer.wav2lip_arch import Wav2Lip

    torch.manual_seed(0)
    print(f"exporting a random full-size Wav2Lip to {path} ...", flush=True)
    export(Wav2Lip().eval(), path)


def _musetalk_models(folder: Path) -> dict[str, Path]:
    """Full-size MuseTalk ONNX files (fp32 and fp16) from random official-format checkpoints,
    made once: model id -> file."""
    ids = [f"musetalk_{name}{suffix}" for name in ("whisper_encoder", "vae_encoder",
                                                   "vae_decoder", "unet_v15")
           for suffix in ("", "_fp16")]
    paths = {model_id: folder / f"{model_id}.onnx" for model_id in ids}
    if all(p.exists() for p in paths.values()):
        return paths
    import torch  # noqa: F401  (the export extra: ModuleNotFoundError names what is missing)

    from installer.export_musetalk import convert
    from tests.musetalk_factory import write_official_checkpoints

    print(f"exporting a random full-size MuseTalk to {folder} (minutes) ...", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        checkpoints = write_official_checkpoints(Path(tmp), tiny=False)
        (checkpoints / "face-parse-bisent" / "79999_iter.pth").unlink()  # not per frame
        convert(checkpoints, folder, versions=("v15",), fp16=True)
    return paths


def _export_random_gfpgan(path: Path) -> None:
    import torch

    from installer.export_gfpgan import export, face_only, new_network

    torch.manual_seed(0)
    network = new_network()  # CannotRun before anything is printed
    print(f"exporting a random full-size GFPGAN v1.4 to {path} ...", flush=True)
    export(face_only(network).eval(), path)


def _export_gfpgan_standin(path: Path) -> None:
    import torch

    from bench.restorer_standin import GFPGANSized
    from installer.export_gfpgan import export

    torch.manual_seed(0)
    print(f"exporting a GFPGAN-sized stand-in to {path} ...", flush=True)
    export(GFPGANSized().eval(), path)


def _identity_restorer(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    face = [1, 3, 512, 512]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "identity",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, face)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, face)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per figure")
    parser.add_argument("--batches", default="1,8,16", help="batch sizes (comma-separated)")
    parser.add_argument("--stages", default="",
                        help="only the stages whose name contains one of these (comma-separated)")
    args = parser.parse_args(argv)
    wanted = [w for w in args.stages.split(",") if w]
    bench = Bench(seconds=args.seconds,
                  batches=tuple(int(b) for b in args.batches.split(",") if b))
    if len(bench.providers()) == 1:
        print("no GPU provider: onnxruntime offers only the CPU here")
    print(f"{'stage':<11} {'model':<12} {'provider':<26} {'batch':>5} {'frames/s':>9}")
    for stage in STAGES:
        if wanted and not any(w in stage.__name__ for w in wanted):
            continue
        for row in stage(bench):
            print(f"{row.stage:<11} {row.model:<12} {row.provider:<26} {row.batch:>5} "
                  f"{row.fps:>9.1f}" + (f"  ({row.note})" if row.note else ""), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
