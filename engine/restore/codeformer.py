"""CodeFormer (Zhou et al., S-Lab non-commercial licence): a transformer predicts codes of a
learned face codebook; its fidelity weight trades restoration (0) against staying close to the
input (1), fed from the ``fidelity`` option through the contract's ``weight`` input."""
from __future__ import annotations

from engine.restore.onnx_restorer import OnnxRestorer


class CodeFormerRestorer(OnnxRestorer):
    name = "codeformer"
    model_id = "codeformer"
