"""Stand-ins of LivePortrait's real size, for timing: FaceFusion's five ONNX contracts
(resources/models.json, the same names and shapes as ``tests/liveportrait_models.py``) around
networks of the official ``models.yaml`` widths, depths and resolutions:

- appearance feature extractor: 7x7 conv, two down blocks (256 -> 64), 1x1 to 512 channels,
  reshaped to a (32, 16, 64, 64) volume and six 3D residual blocks (~0.8M parameters);
- motion extractor: ConvNeXt-V2 tiny (depths 3, 3, 9, 3; widths 96 to 768; ~28M) with the
  keypoint, pose (66 bins each, read out as degrees as FaceFusion's conversion does), scale,
  translation and expression heads;
- generator: the warping module (a 5-level 3D hourglass over the keypoint heatmaps and the
  compressed volume, 7x7x7 mask and 7x7 occlusion heads, ~45M) then the SPADE decoder (six
  512-channel SPADE residual blocks at 64x64, two more at 128 and 256, pixel shuffle to 512;
  ~55M);
- stitcher and lip retargeter: the official MLPs (hidden 128, 128, 64).

Left out, as they cost little: spectral norm, batch norm (folded into the convolutions on
export anyway), and the volume warp's depth axis (the warp samples each depth slice in 2D:
ONNX's GridSample at opset 17 is 2D only). Random weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

KP = 21
VOLUME = (32, 16, 64, 64)  # channels, depth, height, width


class _Res3d(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv3d(c, c, 3, padding=1), nn.Conv3d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureExtractor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 64, 7, padding=3)
        self.down = nn.Sequential(nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                                  nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        self.second = nn.Conv2d(256, 512, 1)
        self.blocks = nn.Sequential(*(_Res3d(VOLUME[0]) for _ in range(6)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.second(self.down(F.relu(self.first(x))))
        return self.blocks(feat.reshape(-1, *VOLUME))


class _LayerNorm2d(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvNeXtV2(nn.Module):
    """depthwise 7x7, layer norm, 4x MLP with global response normalisation."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.zeros(4 * c))
        self.beta = nn.Parameter(torch.zeros(4 * c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(self.norm(self.dw(x).permute(0, 2, 3, 1))))
        g = h.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
        h = self.gamma * h * (g / (g.mean(dim=-1, keepdim=True) + 1e-6)) + self.beta + h
        return x + self.fc2(h).permute(0, 3, 1, 2)


class MotionExtractor(nn.Module):
    def __init__(self, depths: tuple[int, ...] = (3, 3, 9, 3),
                 dims: tuple[int, ...] = (96, 192, 384, 768)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 4, stride=4), _LayerNorm2d(dims[0])]
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if i:
                layers += [_LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dim, 2, stride=2)]
            layers += [_ConvNeXtV2(dim) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], 3 * 66 + 1 + 3 + 2 * KP * 3)
        self.register_buffer("bins", torch.arange(66, dtype=torch.float32))

    def forward(self, x: torch.Tensor):
        h = 0.01 * self.head(self.norm(self.features(x).mean(dim=(2, 3))))
        angles = [(F.softmax(h[:, i * 66:(i + 1) * 66], 1) * self.bins).sum(1, keepdim=True)
                  * 3 - 97.5 for i in range(3)]
        rest = h[:, 198:]
        scale, t = 1.5 + rest[:, :1], rest[:, 1:4]
        exp = rest[:, 4:4 + KP * 3].reshape(-1, KP, 3)
        kp = rest[:, 4 + KP * 3:].reshape(-1, KP, 3)
        return (*angles, scale, t, exp, kp)


def _mlp(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, cout))


class LipRetargeter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = _mlp(65, 63)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.01 * self.mlp(x)


class Stitcher(nn.Module):
    """The official (B,65) offsets applied as FaceFusion's conversion does."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = _mlp(126, 65)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        delta = 0.001 * self.mlp(torch.cat([target.flatten(1), source.flatten(1)], 1))
        shift = torch.cat([delta[:, 63:65], torch.zeros_like(delta[:, :1])], 1)
        return source + delta[:, :63].reshape(-1, KP, 3) + shift[:, None, :]


class _Hourglass3d(nn.Module):
    """5 down blocks (conv3d, pool H and W) and 5 up blocks with skips, widths 32 * 2**i
    up to 1024."""

    def __init__(self, cin: int, base: int = 32, levels: int = 5, top: int = 1024) -> None:
        super().__init__()
        width = [min(top, base * 2 ** i) for i in range(levels + 1)]
        self.down = nn.ModuleList(nn.Conv3d(cin if i == 0 else width[i], width[i + 1], 3,
                                            padding=1) for i in range(levels))
        self.up = nn.ModuleList(nn.Conv3d((1 if i == levels - 1 else 2) * width[i + 1],
                                          width[i], 3, padding=1)
                                for i in reversed(range(levels)))
        self.out_channels = base + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for conv in self.down:
            skips.append(F.avg_pool3d(F.relu(conv(skips[-1])), (1, 2, 2)))
        out = skips.pop()
        for conv in self.up:
            out = F.relu(conv(F.interpolate(out, scale_factor=(1.0, 2.0, 2.0))))
            out = torch.cat([out, skips.pop()], 1)
        return out


class _SPADE(nn.Module):
    def __init__(self, c: int, label: int = 256) -> None:
        super().__init__()
        self.shared = nn.Conv2d(label, 128, 3, padding=1)
        self.gamma, self.beta = nn.Conv2d(128, c, 3, padding=1), nn.Conv2d(128, c, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        seg = F.relu(self.shared(F.interpolate(seg, size=x.shape[2:], mode="nearest")))
        return F.instance_norm(x) * (1 + self.gamma(seg)) + self.beta(seg)


class _SPADEBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = min(cin, cout)
        self.norm0, self.conv0 = _SPADE(cin), nn.Conv2d(cin, mid, 3, padding=1)
        self.norm1, self.conv1 = _SPADE(mid), nn.Conv2d(mid, cout, 3, padding=1)
        self.shortcut = (None if cin == cout else
                         nn.ModuleList([_SPADE(cin), nn.Conv2d(cin, cout, 1, bias=False)]))

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        dx = self.conv0(F.leaky_relu(self.norm0(x, seg), 0.2))
        dx = self.conv1(F.leaky_relu(self.norm1(dx, seg), 0.2))
        skip = x if self.shortcut is None else self.shortcut[1](self.shortcut[0](x, seg))
        return skip + dx


class Generator(nn.Module):
    """Warping module (dense motion from the keypoints, warp, occlusion) then SPADE decoder."""

    def __init__(self, compress: int = 4) -> None:
        super().__init__()
        c, d, h, w = VOLUME
        self.compress = nn.Conv3d(c, compress, 1)
        self.hourglass = _Hourglass3d((KP + 1) * (compress + 1))
        self.mask = nn.Conv3d(self.hourglass.out_channels, KP + 1, 7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_channels * d, 1, 7, padding=3)
        self.third = nn.Conv2d(c * d, 256, 3, padding=1)
        self.fourth = nn.Conv2d(256, 256, 1)
        self.fc = nn.Conv2d(256, 512, 3, padding=1)
        self.middle = nn.ModuleList(_SPADEBlock(512, 512) for _ in range(6))
        self.up0, self.up1 = _SPADEBlock(512, 256), _SPADEBlock(256, 64)
        self.img = nn.Conv2d(64, 3 * 4, 3, padding=1)
        zs, ys, xs = torch.meshgrid(*(torch.linspace(-1, 1, n) for n in (d, h, w)),
                                    indexing="ij")
        self.register_buffer("grid", torch.stack([xs, ys, zs], -1))  # (d, h, w, 3)

    def _warp(self, volume: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """(B, N, C, D, H, W) sampled per depth slice at flow's (B, N, D, H, W, 2) points."""
        b, n, c, d, h, w = volume.shape
        planes = volume.permute(0, 1, 3, 2, 4, 5).reshape(b * n * d, c, h, w)
        out = F.grid_sample(planes, flow.reshape(b * n * d, h, w, 2), align_corners=False)
        return out.reshape(b, n, d, c, h, w).permute(0, 1, 3, 2, 4, 5)

    def forward(self, feature_volume: torch.Tensor, source: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        b = feature_volume.shape[0]
        c, d, h, w = VOLUME
        grid = self.grid[None, None]  # (1, 1, d, h, w, 3)
        # Gaussian heatmaps of driving minus source keypoints (plus a background channel).
        def heat(kp: torch.Tensor) -> torch.Tensor:
            return torch.exp(-((grid - kp[:, :, None, None, None]) ** 2).sum(-1) / 0.01)
        heatmap = heat(source) - heat(target)
        heatmap = torch.cat([torch.zeros_like(heatmap[:, :1]), heatmap], 1)  # (b, kp+1, d,h,w)
        motion = grid - source[:, :, None, None, None] + target[:, :, None, None, None]
        motion = torch.cat([grid.expand(b, 1, d, h, w, 3), motion], 1)
        small = self.compress(feature_volume)
        deformed = self._warp(small[:, None].expand(-1, KP + 1, -1, -1, -1, -1),
                              motion[..., :2])  # (b, kp+1, compress, d, h, w)
        inputs = torch.cat([heatmap[:, :, None], deformed], 2).flatten(1, 2)
        pred = self.hourglass(inputs)
        mask = F.softmax(self.mask(pred), 1)  # (b, kp+1, d, h, w)
        flow = (mask[..., None] * motion).sum(1)  # (b, d, h, w, 3)
        occlusion = torch.sigmoid(self.occlusion(pred.flatten(1, 2)))
        warped = self._warp(feature_volume[:, None], flow[:, None, ..., :2])[:, 0]
        feat = F.leaky_relu(self.third(warped.flatten(1, 2)), 0.2)
        seg = self.fourth(feat) * occlusion
        x = self.fc(seg)
        for block in self.middle:
            x = block(x, seg)
        x = self.up0(F.interpolate(x, scale_factor=2.0), seg)
        x = self.up1(F.interpolate(x, scale_factor=2.0), seg)
        return torch.sigmoid(F.pixel_shuffle(self.img(F.leaky_relu(x, 0.2)), 2))


def write_models(folder: Path, seed: int = 0) -> dict[str, Path]:
    """The five files, exported once into ``folder``; model id -> path."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    face, kp = torch.rand(1, 3, 256, 256), torch.rand(1, KP, 3) * 0.4 - 0.2
    specs = {
        "live_portrait_feature_extractor": (FeatureExtractor, (face,), ["input"], ["output"]),
        "live_portrait_motion_extractor": (MotionExtractor, (face,), ["input"],
                                           ["pitch", "yaw", "roll", "scale", "translation",
                                            "expression", "motion_points"]),
        "live_portrait_lip_retargeter": (LipRetargeter, (torch.rand(1, 65),), ["input"],
                                         ["output"]),
        "live_portrait_stitcher": (Stitcher, (kp, kp), ["source", "target"], ["output"]),
        "live_portrait_generator": (Generator, (torch.rand(1, *VOLUME), kp, kp),
                                    ["feature_volume", "source", "target"], ["output"]),
    }
    paths = {}
    for model_id, (make, args, inputs, outputs) in specs.items():
        path = folder / f"{model_id}.onnx"
        if not path.exists():
            with torch.no_grad():
                torch.onnx.export(make().eval(), args, str(path), input_names=inputs,
                                  output_names=outputs, opset_version=17, dynamo=False,
                                  dynamic_axes={n: {0: "B"} for n in inputs + outputs})
        paths[model_id] = path
    return paths
