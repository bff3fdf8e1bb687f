"""MuseTalk's official checkpoints with random weights, and their ONNX export, for tests.

``write_official_checkpoints`` lays files out as MuseTalk's ``download_weights.sh`` does, in
the published formats (plain state dicts saved with ``torch.save``, the configs as the model
repositories publish them); ``tiny`` shrinks the UNet and the VAE so the whole set exports in
seconds, while Whisper keeps whisper-tiny's real encoder (so its hidden states are (1500, 5,
384) as in use). Tests import the session fixture ``musetalk_onnx`` from here:

    from tests.musetalk_factory import musetalk_onnx  # noqa: F401
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

# musetalkV15/musetalk.json and musetalk/musetalk.json as published.
UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0.dev0",
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 8,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
    "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                       "CrossAttnUpBlock2D"],
}
TINY_UNET = {"block_out_channels": [32, 64], "layers_per_block": 1,
             "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}

# stabilityai/sd-vae-ft-mse config.json as published (no scaling_factor: diffusers' default
# 0.18215 is the one it was trained with).
VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.4.2", "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "out_channels": 3, "sample_size": 256, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TINY_VAE = {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1}

# openai/whisper-tiny config.json (its token lists for generation left out: the encoder
# never reads them).
WHISPER_CONFIG = {
    "_name_or_path": "openai/whisper-tiny", "activation_dropout": 0.0,
    "activation_function": "gelu", "architectures": ["WhisperForConditionalGeneration"],
    "attention_dropout": 0.0, "bos_token_id": 50257, "d_model": 384,
    "decoder_attention_heads": 6, "decoder_ffn_dim": 1536, "decoder_layerdrop": 0.0,
    "decoder_layers": 4, "decoder_start_token_id": 50258, "dropout": 0.0,
    "encoder_attention_heads": 6, "encoder_ffn_dim": 1536, "encoder_layerdrop": 0.0,
    "encoder_layers": 4, "eos_token_id": 50257, "init_std": 0.02, "is_encoder_decoder": True,
    "max_length": 448, "max_source_positions": 1500, "max_target_positions": 448,
    "model_type": "whisper", "num_hidden_layers": 4, "num_mel_bins": 80,
    "pad_token_id": 50257, "scale_embedding": False, "torch_dtype": "float32",
    "transformers_version": "4.27.0.dev0", "use_cache": True, "vocab_size": 51865,
}
# The decoder is loaded but never exported: one layer and a small vocabulary keep it cheap.
TINY_WHISPER = {"decoder_layers": 1, "vocab_size": 64, "bos_token_id": 60,
                "eos_token_id": 60, "pad_token_id": 60, "decoder_start_token_id": 61,
                "max_target_positions": 32}

# openai/whisper-tiny preprocessor_config.json (its precomputed "mel_filters" left out:
# transformers recomputes them from these settings).
WHISPER_PREPROCESSOR = {
    "chunk_length": 30, "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 80, "hop_length": 160, "n_fft": 400, "n_samples": 480000,
    "nb_max_frames": 3000, "padding_side": "right", "padding_value": 0.0,
    "processor_class": "WhisperProcessor", "return_attention_mask": False,
    "sampling_rate": 16000,
}


def write_official_checkpoints(folder: Path, *, tiny: bool = True, seed: int = 0) -> Path:
    """Random MuseTalk v1.5 and v1.0 UNets, VAE, Whisper and BiSeNet in the official layout
    under ``folder``; returns ``folder``."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    from installer.bisenet_arch import BiSeNet

    folder = Path(folder)
    torch.manual_seed(seed)
    unet_config = {**UNET_CONFIG, **(TINY_UNET if tiny else {})}
    for sub, weights in (("musetalkV15", "unet.pth"), ("musetalk", "pytorch_model.bin")):
        unet = diffusers.UNet2DConditionModel(**unet_config)
        _save(folder / sub, "musetalk.json", unet_config, unet.state_dict(), weights)
        del unet

    vae_config = {**VAE_CONFIG, **(TINY_VAE if tiny else {})}
    vae = diffusers.AutoencoderKL.from_config(vae_config)
    _save(folder / "sd-vae", "config.json", vae_config, _deprecated_attention_names(vae),
          "diffusion_pytorch_model.bin")

    whisper_config = {**WHISPER_CONFIG, **(TINY_WHISPER if tiny else {})}
    whisper = transformers.WhisperModel(transformers.WhisperConfig(**whisper_config))
    # As WhisperForConditionalGeneration saves it: the model under "model.", the output
    # projection (the token embedding again) not stored.
    _save(folder / "whisper", "config.json", whisper_config,
          {f"model.{k}": v for k, v in whisper.state_dict().items()}, "pytorch_model.bin")
    (folder / "whisper" / "preprocessor_config.json").write_text(
        json.dumps(WHISPER_PREPROCESSOR, indent=2), encoding="utf-8")

    parser = BiSeNet()
    with torch.no_grad():
        for module in parser.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                # Trained-looking statistics, so folding them into convolutions is exercised.
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    (folder / "face-parse-bisent").mkdir(parents=True, exist_ok=True)
    torch.save(parser.state_dict(), folder / "face-parse-bisent" / "79999_iter.pth")
    return folder


def export_models(checkpoints: Path, out: Path, *, fp16: bool = False) -> dict[str, Path]:
    """Both UNet versions and the other networks exported by the real exporter: model id ->
    ONNX file."""
    pytest.importorskip("onnx")
    from installer.export_musetalk import convert

    return convert(checkpoints, out, versions=("v15", "v10"), fp16=fp16)


@pytest.fixture(scope="session")
def musetalk_onnx(tmp_path_factory) -> dict[str, Path]:
    """The tiny set's ONNX files (model id -> path), exported once per test session."""
    root = tmp_path_factory.mktemp("musetalk")
    checkpoints = write_official_checkpoints(root / "checkpoints")
    return export_models(checkpoints, root / "onnx")


def _save(folder: Path, config_name: str, config: dict, state: dict, weights: str) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / config_name).write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.save(dict(state), folder / weights)


def _deprecated_attention_names(vae) -> dict:
    """The VAE's state dict with the attention names of diffusers 0.4 (query, key, value,
    proj_attn), which sd-vae-ft-mse's diffusion_pytorch_model.bin still uses."""
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for name, value in vae.state_dict().items():
        for new, before in old.items():
            if ".attentions." in name and f".{new}." in name:
                name = name.replace(f".{new}.", f".{before}.")
        state[name] = value
    return state
