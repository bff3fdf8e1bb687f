"""Video ReTalking's release files with random weights, and their ONNX export, for tests.

``write_official_checkpoints`` lays the files out as the release does (``DNet.pt`` with
``net_G_ema``, ``LNet.pth`` / ``ENet.pth`` with ``module.``-prefixed ``state_dict``s, ENet's own
``low_res.*`` copy included, ``face3d_pretrain_epoch_20.pth`` with ``net_recon``,
``expression.mat``, ``BFM.zip`` with ``BFM/similarity_Lm3D_all.mat``, ``ParseNet-latest.pth``
as a plain state dict), built from Redub's architectures at ``TINY`` sizes (the same code
paths, toy widths) or at the published sizes. Weights are moved off their initial values
(norm affines too) so every tensor counts. Tests import the session fixture ``retalking_onnx``:

    from tests.retalking_factory import retalking_onnx  # noqa: F401
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engine.face import geometry as geo

TINY = {
    "dnet": {"descriptor_nc": 16, "warp_base_nc": 4, "warp_max_nc": 8,
             "warp_encoder_layers": 3, "warp_decoder_layers": 2, "edit_base_nc": 4,
             "edit_max_nc": 8, "edit_layers": 2, "edit_res_blocks": 1, "adain_hidden": 8},
    "lnet": {"descriptor_nc": 16, "base_nc": 4, "max_nc": 32, "num_res_blocks": 1},
    "enet": {"num_style_feat": 16, "narrow": 1 / 32},
    "face3d": {"blocks": (1, 1, 1, 1), "width": 4},
    "parsenet": {"base_ch": 4, "ch_range": (4, 8), "res_depth": 1, "min_feat_size": 128},
}
MODELS = ("retalking_face3d", "retalking_dnet", "retalking_enet", "face_parsing_parsenet")


def template_3d() -> np.ndarray:
    """A 3D face (68, 3), y up: the canonical 68-point template with depth at the nose."""
    t = geo.TEMPLATE_68
    x, y = (t[:, 0] - 0.5) * 1.8, -(t[:, 1] - 0.55) * 1.8
    return np.stack([x, y, 0.5 * np.exp(-4 * (x ** 2 + y ** 2))], 1)


def write_official_checkpoints(folder: Path, *, tiny: bool = True, seed: int = 0) -> Path:
    """The release's seven files in ``folder`` (created), random weights."""
    import scipy.io
    import torch

    from installer.dnet_arch import DNet
    from installer.face3d_arch import ReconNet
    from installer.lnet_arch import LNet, RetalkingENet
    from installer.parsenet_arch import ParseNet

    sizes = TINY if tiny else {k: {} for k in TINY}
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    dnet = _jittered(DNet(**sizes["dnet"]))
    torch.save({"net_G_ema": dnet.state_dict()}, folder / "DNet.pt")
    enet = _jittered(RetalkingENet(LNet(**sizes["lnet"]), **sizes["enet"]))
    state = enet.state_dict()
    lnet = {k.removeprefix("low_res."): v for k, v in state.items() if k.startswith("low_res.")}
    torch.save({"state_dict": _module(lnet), "global_step": 1}, folder / "LNet.pth")
    # ENet.pth carries its own, different copy of LNet, which the official loader skips.
    stale = {k: v + 1.0 if k.startswith("low_res.") and v.is_floating_point() else v
             for k, v in state.items()}
    torch.save({"state_dict": _module(stale)}, folder / "ENet.pth")
    face3d = _jittered(ReconNet(**sizes["face3d"]))
    torch.save({"net_recon": face3d.state_dict(), "epoch": 20},
               folder / "face3d_pretrain_epoch_20.pth")
    torch.save(_jittered(ParseNet(**sizes["parsenet"])).state_dict(),
               folder / "ParseNet-latest.pth")
    rng = np.random.default_rng(seed)
    scipy.io.savemat(folder / "expression.mat", {
        "expression_center": rng.normal(0, 0.3, (1, 64)),
        "expression_mouth": rng.normal(0, 0.3, (1, 64))})
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"lm": template_3d()})
    with zipfile.ZipFile(folder / "BFM.zip", "w") as archive:
        archive.writestr("BFM/similarity_Lm3D_all.mat", mat.getvalue())
    return folder


def export_models(checkpoints: Path, out: Path) -> dict[str, Path]:
    from installer.export_retalking import convert

    return convert(checkpoints, out)


@pytest.fixture(scope="session")
def retalking_onnx(tmp_path_factory) -> dict[str, Path]:
    """The tiny release exported once per test session: model id -> ONNX file."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    root = tmp_path_factory.mktemp("retalking")
    return export_models(write_official_checkpoints(root / "checkpoints"), root / "onnx")


def _jittered(net):
    """``net`` in eval mode with every floating tensor moved off its initial value: weights
    by 10% of their spread, norm scales and shifts too (else they would test nothing)."""
    import torch

    with torch.no_grad():
        for name, t in net.state_dict().items():
            if not t.is_floating_point() or name.endswith(("weight_u", "weight_v")):
                continue  # spectral norm's power-iteration vectors: sigma must stay ~|W|
            if "running_var" in name:  # must stay positive
                t.mul_(torch.empty_like(t).uniform_(0.5, 1.5))
                continue
            spread = float(t.std()) if t.numel() > 1 else 0.0
            t.add_(0.1 * (spread or 1.0) * torch.randn_like(t))
    return net.eval()


def _module(state: dict) -> dict:
    return {f"module.{k}": v for k, v in state.items()}
