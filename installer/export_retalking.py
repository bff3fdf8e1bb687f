"""Export Video ReTalking's official checkpoints to the ONNX files the engine runs (issue #16).

    python -m installer.export_retalking CHECKPOINTS -o OUT [--fp16]

CHECKPOINTS is the folder of the release's files (the official ``checkpoints/``): ``DNet.pt``,
``LNet.pth``, ``ENet.pth``, ``face3d_pretrain_epoch_20.pth``, ``expression.mat``, ``BFM.zip``
and ``ParseNet-latest.pth``. Each network is Redub's own architecture (``installer/*_arch.py``)
sized from the checkpoint's own tensors, its weights read with ``torch.load(weights_only=True)``
and loaded strictly, wrapped to the contract's inputs and outputs, exported and checked:
onnxruntime (CPU) must give what torch gives on random inputs to 1e-3 of the output's scale, or
the run fails and removes every file it wrote. What the networks need besides weights goes into
the ONNX metadata: D-Net's two expression templates (``expression.mat``) and the five standard
3D landmarks of the face alignment (``BFM.zip``'s ``BFM/similarity_Lm3D_all.mat``). The command
line also writes ``OUT/SHA256SUMS``.

Keys the official loaders skip (they load with ``strict=False``): ``ENet.pth``'s own copy of
LNet (``low_res.*``; ``LNet.pth`` supplies it). Every other tensor of every file is used, and
every parameter of every network is filled.
"""
from __future__ import annotations

import json
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engine.errors import RedubError
from installer.onnx_export import (Exported, Network, export_networks, load_strict,
                                   print_report, read_checkpoint, require_modules)

DNET, LNET, ENET = "DNet.pt", "LNet.pth", "ENet.pth"
FACE3D, EXPRESSION, BFM, PARSENET = ("face3d_pretrain_epoch_20.pth", "expression.mat", "BFM.zip",
                                     "ParseNet-latest.pth")
LM3D_MEMBER = "BFM/similarity_Lm3D_all.mat"
EXPRESSIONS = ("expression_center", "expression_mouth")
EXTRA = 'install the export extra: pip install -e ".[export]"'
WHERE = "expected among Video ReTalking's release files"


def convert(checkpoints: str | os.PathLike, out: str | os.PathLike, *,
            versions: Sequence[str] = (), fp16: bool = False,
            progress: Callable[[str, int, int], None] | None = None) -> dict[str, Path]:
    """Export the networks of ``checkpoints`` into ``out``: model id -> ONNX file (the model
    download's converter; ``versions`` is unused, there is one release)."""
    return {e.model_id: e.path for e in export(checkpoints, out, fp16=fp16, progress=progress)}


def export(checkpoints: str | os.PathLike, out: str | os.PathLike, *, fp16: bool = False,
           progress: Callable[[str, int, int], None] | None = None) -> list[Exported]:
    """:func:`convert`, reporting each file's parity figures. On any failure the files this
    run wrote are removed and the ``RedubError`` names the file at fault."""
    require_modules(("torch", "scipy", "onnx", "onnxruntime"), EXTRA)
    folder = Path(checkpoints)
    if not folder.is_dir():
        raise RedubError("not a folder of Video ReTalking checkpoints", folder)
    return export_networks(networks_to_export(folder), Path(out), fp16, progress)


def networks_to_export(folder: Path) -> list[Network]:
    """The four networks, the largest first (a broken download is found before minutes of
    work). Small files needed only as metadata are read first, so a missing one stops the run
    before any export."""
    templates = read_expressions(folder / EXPRESSION)
    lm3d = read_lm3d(folder / BFM)
    return [
        Network("retalking_enet", lambda: load_enet(folder),
                {"audio": (("B", 1, 80, 16), _mel), "face": (("B", 6, 384, 384), _masked_face)},
                "image"),
        Network("face_parsing_parsenet", lambda: load_parsenet(folder),
                {"image": (("B", 3, 512, 512), _signed)}, "logits"),
        Network("retalking_face3d", lambda: load_face3d(folder),
                {"image": (("B", 3, 224, 224), _unit)}, "coeffs",
                metadata={"lm3d_std": json.dumps(np.asarray(lm3d).tolist())}),
        Network("retalking_dnet", lambda: load_dnet(folder),
                {"image": (("B", 3, 256, 256), _signed), "coeffs": (("B", 73, 26), _normal)},
                "stabilized", metadata=templates),
    ]


# --- the networks, as the contract's inputs and outputs ---------------------------------------

def load_dnet(folder: Path):
    """D-Net (``DNet.pt``'s ``net_G_ema``): (image, coeffs) -> the face with their expression."""
    from installer.dnet_arch import DNet, config_from_state

    path = folder / DNET
    state = _state(path, "net_G_ema")
    net = _sized(DNet, config_from_state, state, path)
    load_strict(net, state, path, "Video ReTalking's D-Net")
    return net.eval()


def load_enet(folder: Path):
    """LNet inside ENet (``LNet.pth`` and ``ENet.pth``): (audio, face) -> the new face."""
    from installer.lnet_arch import (LNet, RetalkingENet, config_from_state,
                                     fold_spectral_norms, load_official)

    lnet_path, enet_path = folder / LNET, folder / ENET
    lnet_state = _state(lnet_path, "state_dict")
    enet_state = _state(enet_path, "state_dict")
    model = _sized(lambda lnet, enet: RetalkingENet(LNet(**lnet), **enet),
                   lambda state: dict(zip(("lnet", "enet"), config_from_state(*state))),
                   (lnet_state, enet_state), enet_path)
    try:
        load_official(model, {"state_dict": lnet_state}, {"state_dict": enet_state})
    except ValueError as exc:
        name, _, problem = str(exc).partition(": ")
        raise RedubError(problem, folder / name) from None
    fold_spectral_norms(model)  # eval-mode weights once, not recomputed on every run
    return model.eval()


def load_face3d(folder: Path):
    """Deep3DFaceRecon's regressor (``net_recon``): aligned face -> 257 coefficients."""
    from installer.face3d_arch import ReconNet

    path = folder / FACE3D
    state = _state(path, "net_recon")
    blocks = tuple(_count(state, rf"backbone\.layer{i}\.(\d+)\.") for i in range(1, 5))
    width = _shape(state, "backbone.conv1.weight", path)[0]
    net = _built(lambda: ReconNet(blocks=blocks, width=width), path)
    load_strict(net, state, path, "Deep3DFaceRecon's ResNet-50 regressor")
    return net.eval()


def load_parsenet(folder: Path):
    """GPEN's ParseNet (a plain state dict): face at 512 -> the 19 class logits."""
    from installer.parsenet_arch import ParseNet

    path = folder / PARSENET
    state = _state(path, None)
    base = _shape(state, "encoder.0.conv2d.weight", path)[0]
    down = _count(state, r"encoder\.(\d+)\.") - 1  # after the first unit, each halves
    widths = [int(v.shape[0]) for k, v in state.items()
              if re.match(r"(encoder|body|decoder)\.\d+\..*conv2d\.weight$", k)]
    size = 512
    net = _built(lambda: ParseNet(
        in_size=size, out_size=size, min_feat_size=size >> down,
        base_ch=base, parsing_ch=_shape(state, "out_mask_conv.conv2d.weight", path)[0],
        res_depth=_count(state, r"body\.(\d+)\."), ch_range=(min(widths), max(widths))), path)
    load_strict(net, state, path, "GPEN's ParseNet")
    return net.eval()


# --- what goes into the metadata ----------------------------------------------------------------

def read_expressions(path: Path) -> dict[str, str]:
    """``expression.mat``'s two templates (64 expression coefficients each) as JSON lists, by
    the names the engine reads them under."""
    from scipy.io import loadmat

    if not path.is_file():
        raise RedubError(f"not found ({WHERE})", path)
    try:
        mat = loadmat(path)
    except Exception as exc:  # scipy raises several types for files that are not MATLAB's
        raise RedubError(f"cannot read the expression templates ({exc.__class__.__name__})",
                         path) from exc
    templates = {}
    for key in EXPRESSIONS:
        values = np.asarray(mat.get(key, ()), np.float64).ravel()
        if values.shape != (64,) or not np.isfinite(values).all():
            raise RedubError(f"no 64 finite expression coefficients under '{key}'", path)
        templates[key] = json.dumps(values.tolist())
    return templates


def read_lm3d(path: Path) -> np.ndarray:
    """The five standard 3D landmarks (5, 3) from ``BFM.zip``'s similarity_Lm3D_all.mat."""
    from installer.face3d_arch import load_lm3d_std

    if not path.is_file():
        raise RedubError(f"not found ({WHERE})", path)
    try:
        with zipfile.ZipFile(path) as archive, archive.open(LM3D_MEMBER) as member:
            return load_lm3d_std(member)
    except KeyError:
        raise RedubError(f"no {LM3D_MEMBER} inside", path) from None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise RedubError(f"cannot read {LM3D_MEMBER} ({exc.__class__.__name__}: "
                         f"{str(exc)[:120]})", path) from exc


# --- reading the checkpoints --------------------------------------------------------------------

def _state(path: Path, key: str | None) -> dict:
    """The state dict under ``key`` of an official checkpoint (the file itself for None),
    ``module.`` prefixes (from training in DataParallel) stripped."""
    if not path.is_file():
        raise RedubError(f"not found ({WHERE})", path)
    checkpoint = read_checkpoint(path)
    state = checkpoint.get(key) if key is not None and isinstance(checkpoint, dict) \
        else checkpoint
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and hasattr(v, "shape") for k, v in state.items()):
        where = f"under '{key}'" if key else ""
        raise RedubError(f"no state dict {where} (a mapping of parameter names to "
                         "tensors)".replace("  ", " "), path)
    return {k.removeprefix("module."): v for k, v in state.items()}


def _sized(make: Callable, config_from_state: Callable, state, path: Path):
    """``make(**config_from_state(state))``: the architecture sized from the checkpoint."""
    try:
        config = config_from_state(state)
    except (KeyError, ValueError, IndexError) as exc:
        raise RedubError(f"not the Video ReTalking architecture (cannot size it: "
                         f"{exc.__class__.__name__}: {str(exc)[:120]})", path) from None
    return _built(lambda: make(**config), path)


def _built(make: Callable, path: Path):
    try:
        return make()
    except Exception as exc:  # impossible sizes surface as many types
        raise RedubError(f"not the expected architecture ({exc.__class__.__name__}: "
                         f"{str(exc)[:120]})", path) from exc


def _count(state: dict, pattern: str) -> int:
    """How many distinct indices ``pattern``'s group matches among the state's keys."""
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def _shape(state: dict, key: str, path: Path) -> tuple[int, ...]:
    if key not in state:
        raise RedubError(f"not the expected architecture: missing key {key}", path)
    return tuple(int(n) for n in state[key].shape)


# --- test values ------------------------------------------------------------------------------

def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape)


def _unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(0, 1, shape)


def _signed(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(-1, 1, shape)


def _mel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(-4, 4, shape)


def _masked_face(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Faces as ENet gets them: the crop's lower half black, then the reference."""
    faces = rng.uniform(0, 1, shape)
    faces[:, :3, shape[2] // 2:] = 0.0
    return faces


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m installer.export_retalking",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", help="the folder of Video ReTalking's release files")
    parser.add_argument("-o", "--output", required=True, help="the folder to write into")
    parser.add_argument("--fp16", action="store_true",
                        help="also write float16 variants (<id>_fp16.onnx)")
    args = parser.parse_args(argv)

    def progress(model_id: str, done: int, total: int) -> None:
        if done < total:
            print(f"[{done + 1}/{total}] {model_id}", flush=True)

    try:
        exported = export(args.checkpoints, args.output, fp16=args.fp16, progress=progress)
    except RedubError as exc:
        print(f"export_retalking: error: {exc}", file=sys.stderr)
        return 1
    print_report(exported, Path(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
