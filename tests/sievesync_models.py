"""SieveSync's models as tiny random networks in the public contracts, installed for a test.

``install_models`` fills the current model folder (``REDUB_MODELS_DIR``) with MuseTalk 1.5's
four files (from the ``musetalk_onnx`` fixture), a CodeFormer stand-in and LivePortrait's
five files.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.models.store import import_model

MUSETALK = ("musetalk_whisper_encoder", "musetalk_vae_encoder", "musetalk_vae_decoder",
            "musetalk_unet_v15")


def install_models(musetalk_onnx: dict[str, Path], folder: Path) -> None:
    """Install every model SieveSync needs; ``folder`` takes the files made on the way."""
    from tests.liveportrait_models import install, write_models

    for model in MUSETALK:
        import_model(musetalk_onnx[model], model)
    import_model(codeformer(folder / "codeformer.onnx"), "codeformer")
    (folder / "liveportrait").mkdir()
    install(write_models(folder / "liveportrait"))


def codeformer(path: Path) -> Path:
    """CodeFormer's contract: ``input`` (1,3,512,512), ``weight`` (1,) float64 ->
    input x weight x 0.8 (the fidelity reaches it; a visible change)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto as T, helper as h

    image = [1, 3, 512, 512]
    graph = h.make_graph(
        [h.make_node("Cast", ["weight"], ["w"], to=T.FLOAT),
         h.make_node("Mul", ["input", "w"], ["weighted"]),
         h.make_node("Mul", ["weighted", "gain"], ["output"])], "codeformer",
        [h.make_tensor_value_info("input", T.FLOAT, image),
         h.make_tensor_value_info("weight", T.DOUBLE, [1])],
        [h.make_tensor_value_info("output", T.FLOAT, image)],
        [h.make_tensor("gain", T.FLOAT, [], [0.8])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path
