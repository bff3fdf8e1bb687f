"""Export MuseTalk's official checkpoints to the ONNX files the engine runs (issue #14).

    python -m installer.export_musetalk CHECKPOINTS -o OUT [--version v15|v10|both] [--fp16]

CHECKPOINTS is the folder MuseTalk's ``download_weights.sh`` fills: ``musetalkV15/`` (v1.5),
``musetalk/`` (v1.0), ``sd-vae/``, ``whisper/`` and ``face-parse-bisent/``. Each network is
built from the checkpoint's own config (diffusers ``UNet2DConditionModel`` and
``AutoencoderKL``, transformers ``WhisperModel``, :mod:`installer.bisenet_arch`), its weights
read with ``torch.load(weights_only=True)`` and loaded strictly, wrapped to the contract's
inputs and outputs, exported, and checked: onnxruntime (CPU) must give what torch gives on
random inputs to 1e-3 of the output's scale (3e-2 for the ``--fp16`` files), or the run fails
and removes every file it wrote. Networks whose weights pass 2 GB (the fp32 UNet) keep them
in one ``<file>.onnx.data`` beside the graph; the others are single files. The command line
also writes ``OUT/SHA256SUMS``: sha256, size in bytes and name of every file it wrote.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from engine.errors import RedubError
from installer.onnx_export import (Exported, Network, export_networks, load_strict,
                                   print_report, read_state, require_modules)

VERSIONS = ("v15", "v10")
UNET_FILES = {"v15": ("musetalkV15/musetalk.json", "musetalkV15/unet.pth"),
              "v10": ("musetalk/musetalk.json", "musetalk/pytorch_model.bin")}
VAE_FILES = ("sd-vae/config.json", "sd-vae/diffusion_pytorch_model.bin")
WHISPER_FILES = ("whisper/config.json", "whisper/pytorch_model.bin")
PARSING_FILE = "face-parse-bisent/79999_iter.pth"

PE_LENGTH = 5000  # MuseTalk's PositionalEncoding(max_len=5000)
EXTRA = 'install the export extra: pip install -e ".[export]"'


def convert(checkpoints: str | os.PathLike, out: str | os.PathLike, *,
            versions: Sequence[str] = ("v15",), fp16: bool = False,
            progress: Callable[[str, int, int], None] | None = None) -> dict[str, Path]:
    """Export the networks of ``checkpoints`` (the official layout) into ``out``: model id ->
    ONNX file. ``fp16`` adds the ``<id>_fp16`` variants. Face parsing is skipped when
    ``face-parse-bisent/79999_iter.pth`` is absent. ``progress(model_id, done, total)`` is
    called as each network starts, and with ``done == total`` at the end."""
    return {e.model_id: e.path for e in export(checkpoints, out, versions=versions, fp16=fp16,
                                               progress=progress)}


def export(checkpoints: str | os.PathLike, out: str | os.PathLike, *,
           versions: Sequence[str] = ("v15",), fp16: bool = False,
           progress: Callable[[str, int, int], None] | None = None) -> list[Exported]:
    """:func:`convert`, reporting each file's parity figures. On any failure the files this
    run wrote are removed and the ``RedubError`` names the file at fault."""
    _require_export_extra()
    folder, out = Path(checkpoints), Path(out)
    if not folder.is_dir():
        raise RedubError("not a folder of MuseTalk checkpoints", folder)
    unknown = [v for v in versions if v not in VERSIONS]
    if unknown or not versions:
        raise RedubError(f"unknown MuseTalk version {unknown[0] if unknown else '(none)'}: "
                         f"choose from {', '.join(VERSIONS)}")
    return export_networks(networks_to_export(folder, versions), out, fp16, progress)


def networks_to_export(folder: Path, versions: Sequence[str]) -> list[Network]:
    """The networks the folder provides, UNets first (the largest checkpoints, so a broken
    download is found before minutes of work); face parsing only where its checkpoint is."""
    # A: the audio window's rows (a 10-step window of whisper-tiny's 5 hidden states is 50)
    networks = [Network(f"musetalk_unet_{v}", lambda v=v: load_unet(folder, v),
                        {"latents": (("B", 8, 32, 32), _normal),
                         "audio": (("B", "A", 384), _normal)}, "pred_latents",
                        sizes={"A": (50, PE_LENGTH)})
                for v in versions]
    networks += [
        Network("musetalk_vae_encoder", lambda: load_vae(folder, encode=True),
                {"image": (("B", 3, 256, 256), _half_blank)}, "latents"),
        Network("musetalk_vae_decoder", lambda: load_vae(folder, encode=False),
                {"latents": (("B", 4, 32, 32), _normal)}, "image"),
        Network("musetalk_whisper_encoder", lambda: load_whisper(folder),
                {"input_features": (("B", 80, 3000), _uniform)}, "hidden_states"),
    ]
    if (folder / PARSING_FILE).is_file():
        networks.append(Network("face_parsing_bisenet", lambda: load_bisenet(folder),
                                {"image": (("B", 3, 512, 512), _normal)}, "logits"))
    return networks


# --- the networks, as the contract's inputs and outputs ---------------------------------------

def load_unet(folder: Path, version: str):
    """The MuseTalk UNet of ``version``: (latents, audio) -> pred_latents at timestep 0, the
    positional encoding added to the audio inside the graph."""
    import torch
    from diffusers import UNet2DConditionModel

    config_name, weights_name = UNET_FILES[version]
    config = _read_config(folder / config_name)
    unet = _build(lambda: UNet2DConditionModel(**config), folder / config_name)
    load_strict(unet, _read_state(folder / weights_name), folder / weights_name,
                 f"the MuseTalk {version} UNet of {config_name}")

    class UNetStep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = unet
            self.register_buffer("pe", positional_encoding(PE_LENGTH, 384))
            self.register_buffer("timestep", torch.zeros((), dtype=torch.long))

        def forward(self, latents, audio):
            audio = audio + self.pe[:audio.shape[1]]
            return self.unet(latents, self.timestep, encoder_hidden_states=audio).sample

    return UNetStep().eval()


def positional_encoding(length: int, d_model: int):
    """MuseTalk's sinusoidal encoding (Vaswani et al.): sin on even, cos on odd channels."""
    import torch

    position = torch.arange(length, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                     * (-np.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(position * rate)
    pe[:, 1::2] = torch.cos(position * rate)
    return pe


def load_vae(folder: Path, *, encode: bool):
    """sd-vae-ft-mse's encoder (image in [-1, 1] -> the posterior's mode times the scaling
    factor) or decoder (scaled latents -> image in [0, 1])."""
    import torch
    from diffusers import AutoencoderKL

    config_name, weights_name = VAE_FILES
    config = _read_config(folder / config_name)
    vae = _build(lambda: AutoencoderKL.from_config(config), folder / config_name)
    state = _read_state(folder / weights_name)
    # The published file predates diffusers' attention rename (query -> to_q, ...); diffusers
    # renames such keys when it loads the file itself.
    vae._fix_state_dict_keys_on_load(state)
    load_strict(vae, state, folder / weights_name, f"the VAE of {config_name}")
    scale = float(vae.config.scaling_factor)

    class Encode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def forward(self, image):
            return self.vae.encode(image).latent_dist.mode() * scale

    class Decode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def forward(self, latents):
            image = self.vae.decode(latents * (1 / scale)).sample
            return (image / 2 + 0.5).clamp(0, 1)

    return (Encode() if encode else Decode()).eval()


def load_whisper(folder: Path):
    """Whisper's encoder: log-mel (B, 80, 3000) -> every hidden state stacked on axis 2."""
    import torch
    from transformers import WhisperConfig, WhisperModel

    config_name, weights_name = WHISPER_FILES
    config_path = folder / config_name
    _read_config(config_path)  # a readable JSON object, or one line saying why not
    config = _build(lambda: WhisperConfig.from_json_file(config_path), config_path)
    model = _build(lambda: WhisperModel(config), config_path)
    state = _read_state(folder / weights_name)
    # The published file is WhisperForConditionalGeneration's: "model." before every name,
    # and possibly its output projection, which is the token embedding again.
    if state and all(k.startswith("model.") for k in state if k != "proj_out.weight"):
        state = {k[len("model."):]: v for k, v in state.items() if k != "proj_out.weight"}
    load_strict(model, state, folder / weights_name, f"the Whisper model of {config_name}")

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model.encoder

        def forward(self, input_features):
            states = self.encoder(input_features, output_hidden_states=True).hidden_states
            return torch.stack(states, dim=2)

    return Encoder().eval()


def load_bisenet(folder: Path):
    """BiSeNet face parsing: ImageNet-normalised RGB (B, 3, 512, 512) -> class logits."""
    import torch

    from installer.bisenet_arch import BiSeNet

    net = BiSeNet()
    load_strict(net, _read_state(folder / PARSING_FILE), folder / PARSING_FILE,
                 "the BiSeNet face parser")

    class Parse(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image):
            return self.net(image)[0]

    return Parse().eval()


# --- test values ------------------------------------------------------------------------------

def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape)


def _uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(-1, 1, shape)


def _half_blank(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Pictures as the VAE encoder gets them, the first with its lower half black (-1): the
    near-constant half is where onnxruntime's group norm loses most precision."""
    pictures = _uniform(rng, shape)
    pictures[0, :, shape[2] // 2:] = -1.0
    return pictures


# --- reading the checkpoints ------------------------------------------------------------------

def _require_export_extra() -> None:
    require_modules(("torch", "diffusers", "transformers", "onnx", "onnxruntime"), EXTRA)


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise RedubError("not found (expected where MuseTalk's download_weights.sh puts it)",
                         path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RedubError(f"cannot read the config ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0][:120]})", path) from exc
    if not isinstance(config, dict):
        raise RedubError("the config is not a JSON object", path)
    return config


def _read_state(path: Path) -> dict:
    return read_state(path, "expected where MuseTalk's download_weights.sh puts it")


def _build(make: Callable[[], Any], config_path: Path):
    try:
        return make()
    except Exception as exc:  # the libraries reject bad settings with many types
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise RedubError(f"cannot build the network from this config "
                         f"({exc.__class__.__name__}: {first})", config_path) from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m installer.export_musetalk",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", help="the folder of MuseTalk's official checkpoints")
    parser.add_argument("-o", "--output", required=True, help="the folder to write into")
    parser.add_argument("--version", choices=("v15", "v10", "both"), default="v15",
                        help="which MuseTalk UNet (default v15)")
    parser.add_argument("--fp16", action="store_true",
                        help="also write float16 variants (<id>_fp16.onnx)")
    args = parser.parse_args(argv)
    versions = VERSIONS if args.version == "both" else (args.version,)
    folder, out = Path(args.checkpoints), Path(args.output)
    if folder.is_dir() and not (folder / PARSING_FILE).is_file():
        print(f"export_musetalk: {folder / PARSING_FILE} not found: face parsing "
              "(face_parsing_bisenet) skipped", file=sys.stderr)

    def progress(model_id: str, done: int, total: int) -> None:
        if done < total:
            print(f"[{done + 1}/{total}] {model_id}", flush=True)

    try:
        exported = export(folder, out, versions=versions, fp16=args.fp16,
                                   progress=progress)
    except RedubError as exc:
        print(f"export_musetalk: error: {exc}", file=sys.stderr)
        return 1
    print_report(exported, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
