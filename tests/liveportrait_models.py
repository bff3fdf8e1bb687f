"""Tiny LivePortrait networks in FaceFusion's ONNX contracts (resources/models.json), exported
from small torch modules with random weights: the same input and output names and shapes, a
few thousand parameters each.

``write_models(folder)`` writes the five files the ``liveportrait`` stabilizer runs and returns
model id -> path; ``install(paths)`` imports them into the model folder of the environment.
"""
from __future__ import annotations

from pathlib import Path

import pytest

KP = 21


def write_models(folder: Path, seed: int = 0, stitch_identity: bool = False,
                 pass_through: bool = False) -> dict[str, Path]:
    """The five files; ``stitch_identity`` makes the stitcher hand back its ``source``
    (the driving keypoints) unchanged, so a test can see them reach the generator;
    ``pass_through`` makes the feature volume carry the 256-pixel face (space to depth) and the
    generator draw it back at 512, so the face comes back where it was taken from."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    nn = torch.nn
    torch.manual_seed(seed)

    class FeatureExtractor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.AvgPool2d(4)
            self.mix = nn.Conv2d(3, 32 * 16, 1)

        def forward(self, x):
            if pass_through:
                packed = nn.functional.pixel_unshuffle(x, 4)  # (B, 48, 64, 64)
                volume = torch.cat([packed, torch.zeros_like(packed[:, :1]).expand(
                    -1, 32 * 16 - 48, -1, -1)], 1)
                return volume.reshape(-1, 32, 16, 64, 64)
            return self.mix(self.pool(x)).reshape(-1, 32, 16, 64, 64)

    class MotionExtractor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(4)
            self.head = nn.Linear(48, 3 + 1 + 3 + 2 * KP * 3)
            self.register_buffer("canonical", torch.randn(1, KP, 3) * 0.3)

        def forward(self, x):
            h = torch.tanh(self.head(self.pool(x).flatten(1)))
            pitch, yaw, roll = h[:, 0:1] * 20, h[:, 1:2] * 30, h[:, 2:3] * 10
            scale = 1.5 + 0.2 * h[:, 3:4]
            t = 0.05 * h[:, 4:7]
            exp = 0.02 * h[:, 7:7 + KP * 3].reshape(-1, KP, 3)
            kp = self.canonical + 0.01 * h[:, 7 + KP * 3:].reshape(-1, KP, 3)
            return pitch, yaw, roll, scale, t, exp, kp

    class LipRetargeter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(65, 63)

        def forward(self, x):
            return 0.05 * torch.tanh(self.fc(x))

    class Stitcher(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(126, 65)

        def forward(self, source, target):
            if stitch_identity:
                return source + 0 * target
            delta = 0.01 * torch.tanh(self.fc(torch.cat([target.flatten(1),
                                                          source.flatten(1)], 1)))
            moved = source + delta[:, :63].reshape(-1, KP, 3)
            shift = torch.cat([delta[:, 63:65], torch.zeros_like(delta[:, :1])], 1)
            return moved + shift[:, None, :]

    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.colour = nn.Conv2d(32, 3, 1)
            self.motion = nn.Linear(2 * KP * 3, 3)
            self.up = nn.Upsample(scale_factor=8, mode="bilinear")
            self.up2 = nn.Upsample(scale_factor=2, mode="bilinear")

        def forward(self, feature_volume, source, target):
            if pass_through:
                face = nn.functional.pixel_shuffle(feature_volume.reshape(-1, 512, 64, 64)[:, :48],
                                                   4)
                return self.up2(face) + 0 * (source - target).sum()
            picture = self.colour(feature_volume.mean(2))
            shift = self.motion(torch.cat([source.flatten(1), target.flatten(1)], 1))
            return torch.sigmoid(self.up(picture) + shift[:, :, None, None])

    face = torch.rand(1, 3, 256, 256)
    kp = torch.rand(1, KP, 3)
    specs = {
        "live_portrait_feature_extractor": (FeatureExtractor(), (face,), ["input"], ["output"]),
        "live_portrait_motion_extractor": (MotionExtractor(), (face,), ["input"],
                                           ["pitch", "yaw", "roll", "scale", "translation",
                                            "expression", "motion_points"]),
        "live_portrait_lip_retargeter": (LipRetargeter(), (torch.rand(1, 65),), ["input"],
                                         ["output"]),
        "live_portrait_stitcher": (Stitcher(), (kp, kp), ["source", "target"], ["output"]),
        "live_portrait_generator": (Generator(), (torch.rand(1, 32, 16, 64, 64), kp, kp),
                                    ["feature_volume", "source", "target"], ["output"]),
    }
    paths = {}
    for model_id, (module, args, inputs, outputs) in specs.items():
        path = folder / f"{model_id}.onnx"
        torch.onnx.export(module.eval(), args, str(path), input_names=inputs,
                          output_names=outputs, opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "B"} for n in inputs + outputs})
        paths[model_id] = path
    return paths


def install(paths: dict[str, Path]) -> None:
    """Import the files into the current model folder (``REDUB_MODELS_DIR``)."""
    from engine.models.store import import_model

    for model_id, path in paths.items():
        import_model(path, model_id)
