"""GPEN-BFR-512 (Yang et al., non-commercial licence): a GAN-prior restorer like GFPGAN, with
the prior embedded in the decoder's layers; softer, keeps the input's likeness better."""
from __future__ import annotations

from engine.restore.onnx_restorer import OnnxRestorer


class GPENRestorer(OnnxRestorer):
    name = "gpen"
    model_id = "gpen_bfr_512"
