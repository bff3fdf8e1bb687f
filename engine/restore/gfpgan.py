"""GFPGAN v1.4 (TencentARC, Apache-2.0): a U-Net whose decoder is a pretrained StyleGAN2 face
generator; crisp teeth and lips, some loss of likeness at full strength. The ONNX file comes
from the manifest's mirror or from ``installer/export_gfpgan.py``."""
from __future__ import annotations

from engine.restore.onnx_restorer import OnnxRestorer


class GFPGANRestorer(OnnxRestorer):
    name = "gfpgan"
    model_id = "gfpgan_1.4"
