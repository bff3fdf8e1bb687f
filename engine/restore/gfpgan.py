"""GFPGAN v1.4 and v1.3 (TencentARC, Apache-2.0): a U-Net whose decoder is a pretrained
StyleGAN2 face generator; crisp teeth and lips, some loss of likeness at full strength. The ONNX
files come from the manifest's mirror or from ``installer/export_gfpgan.py``."""
from __future__ import annotations

from engine.restore.onnx_restorer import OnnxRestorer


class GFPGANRestorer(OnnxRestorer):
    name = "gfpgan"
    model_id = "gfpgan_1.4"


class GFPGAN13Restorer(OnnxRestorer):
    """GFPGAN v1.3: the version Video ReTalking restores its mouths with."""

    name = "gfpgan_1.3"
    model_id = "gfpgan_1.3"
