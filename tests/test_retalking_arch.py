"""Our torch architectures of Video ReTalking's networks: the official checkpoints' parameter
layout (strict loads) and the behaviour their ONNX contracts rely on."""
from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")

from installer.dnet_arch import WINDOW, DNet, config_from_state, warp  # noqa: E402


TINY_DNET = {"descriptor_nc": 16, "warp_base_nc": 4, "warp_max_nc": 8, "warp_encoder_layers": 3,
             "warp_decoder_layers": 2, "edit_base_nc": 4, "edit_max_nc": 8, "edit_layers": 2,
             "edit_res_blocks": 2, "adain_hidden": 8}


def _tiny_dnet(seed: int) -> DNet:
    """D-Net's full code path (hourglass with skips, flow at half size, AdaIN blocks) at toy
    widths, every parameter moved off its initial value (norm affines too) so each one counts."""
    torch.manual_seed(seed)
    net = DNet(**TINY_DNET).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def _dnet_inputs(batch: int, seed: int = 0, size: int = 32) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
            torch.randn(batch, 73, WINDOW, generator=g))


def test_dnet_matches_the_official_parameter_layout():
    state = DNet().state_dict()
    # Count, size and a sample of names and shapes as in DNet.pt's net_G_ema.
    assert (len(state), sum(v.numel() for v in state.values())) == (304, 22_519_109)
    expected = {
        "mapping_net.first.0.weight": (256, 73, 7),
        "mapping_net.encoder2.1.weight": (256, 256, 3),
        "warpping_net.hourglass.encoder.input_layer.weight": (32, 3, 7, 7),
        "warpping_net.hourglass.encoder.encoder4.norm_0.mlp_shared.0.weight": (128, 256),
        "warpping_net.hourglass.decoder.decoder2.conv_s.weight": (512, 128, 3, 3),
        "warpping_net.hourglass.decoder.decoder3.conv_1.weight": (256, 256, 3, 3),
        "warpping_net.flow_out.0.weight": (256, 1, 1),
        "warpping_net.flow_out.2.weight": (2, 256, 7, 7),
        "editing_net.encoder.first.model.1.weight": (64, 1, 1),
        "editing_net.encoder.down2.model.0.weight": (256, 256, 3, 3),
        "editing_net.decoder.up0.model.0.weight": (64, 128, 3, 3),
        "editing_net.decoder.res0.res1.conv1.weight": (128, 128, 3, 3),
        "editing_net.decoder.res2.res0.norm2.mlp_gamma.weight": (256, 128),
        "editing_net.decoder.jump1.model.1.bias": (128, 1, 1),
        "editing_net.decoder.final.model.0.weight": (3, 64, 7, 7),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected


def test_dnet_config_from_state_sizes_the_network():
    defaults = {k: p.default for k, p in inspect.signature(DNet).parameters.items()}
    assert config_from_state(DNet().state_dict()) == defaults
    tiny = _tiny_dnet(0).state_dict()
    assert config_from_state(tiny) == {**defaults, **TINY_DNET}
    with pytest.raises(KeyError):
        config_from_state({k: v for k, v in tiny.items() if "decoder.res0" not in k})


def test_dnet_state_dict_round_trips_strictly():
    source, target = _tiny_dnet(1), _tiny_dnet(2)
    image, coeffs = _dnet_inputs(2)
    with torch.no_grad():
        assert not torch.allclose(source(image, coeffs), target(image, coeffs), atol=1e-3)
        target.load_state_dict(source.state_dict(), strict=True)
        assert torch.equal(source(image, coeffs), target(image, coeffs))


def test_dnet_loads_an_official_format_checkpoint_strictly(tmp_path):
    source = _tiny_dnet(1)
    path = tmp_path / "DNet.pt"
    torch.save({"net_G_ema": source.state_dict()}, path)
    state = torch.load(path, map_location="cpu", weights_only=True)["net_G_ema"]
    loaded = _tiny_dnet(2)
    loaded.load_state_dict(state, strict=True)
    image, coeffs = _dnet_inputs(1)
    with torch.no_grad():
        assert torch.equal(source(image, coeffs), loaded(image, coeffs))
    # Strict: a key too many or too few is refused, not silently skipped.
    with pytest.raises(RuntimeError, match="Unexpected key"):
        _tiny_dnet(2).load_state_dict({**state, "warpping_net.pool.weight": torch.ones(1)})
    del state["editing_net.decoder.final.model.0.bias"]
    with pytest.raises(RuntimeError, match="Missing key"):
        _tiny_dnet(2).load_state_dict(state)


def test_dnet_forward_shapes_and_the_coefficients_steer_it():
    net = _tiny_dnet(3)
    image, coeffs = _dnet_inputs(2)
    with torch.no_grad():
        out = net(image, coeffs)
        other = net(image, coeffs.flip(0))
        wide = net(*_dnet_inputs(1, size=64))
    assert out.shape == (2, 3, 32, 32) and wide.shape == (1, 3, 64, 64)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out.abs().max() <= 1  # tanh
    assert (out - other).abs().max() > 1e-3  # the expression window changes the face


def test_dnet_batch_items_are_independent():
    net = _tiny_dnet(4)
    image, coeffs = _dnet_inputs(2, seed=5)
    with torch.no_grad():
        batch = net(image, coeffs)
        singles = torch.cat([net(image[i:i + 1], coeffs[i:i + 1]) for i in range(2)])
    # Rounding differs with the batch's kernels (~2e-5 here, as far from float64 as either);
    # anything mixing the items moves outputs by 1e-2 and more.
    assert torch.allclose(batch, singles, atol=1e-4)


def test_dnet_warp_keeps_the_publishers_sampling_grid():
    # A ramp of column index + 1, so the zero padding outside shows.
    width = 8
    image = (torch.arange(width, dtype=torch.float32) + 1).expand(1, 1, 4, width)
    flow = torch.zeros(1, 2, 4, width)
    # Corners at -1 and 1 sampled with align_corners=False: column i reads x = i W/(W-1) - 1/2
    # (and likewise in y: the outer rows are half padding, so the inner ones are compared).
    stretched = torch.arange(width) * width / (width - 1) - 0.5
    expected = torch.cat([torch.tensor([0.5]), stretched[1:-1] + 1, torch.tensor([4.0])])
    assert torch.allclose(warp(image, flow)[0, 0, 1:3], expected.expand(2, width), atol=1e-5)
    # A flow of one pixel in x reads where the next column reads at zero flow.
    flow[:, 0] = 1
    shifted = warp(image, flow)[0, 0, 1:3, :6]
    assert torch.allclose(shifted, (stretched[1:7] + 1).expand(2, 6), atol=1e-5)


# --- LNet and ENet (installer/lnet_arch.py) ------------------------------------------------------

from installer.lnet_arch import (LNet, ModulatedConv2d, RetalkingENet,  # noqa: E402
                                 fold_spectral_norms, irfft2_ortho, load_official, rfft2_ortho)
from installer.lnet_arch import config_from_state as enet_config_from_state  # noqa: E402


def _tiny_enet(seed: int) -> RetalkingENet:
    """ENet around LNet, every block of the official code path at toy widths, parameters moved
    off their initial values (norm affines and the noise strengths too) so each one counts."""
    torch.manual_seed(seed)
    lnet = LNet(descriptor_nc=16, base_nc=4, max_nc=32, num_res_blocks=1)
    net = RetalkingENet(lnet, num_style_feat=16, narrow=1 / 32).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def _enet_inputs(batch: int, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    face = torch.rand(batch, 6, 384, 384, generator=g)
    face[:, :3, 192:] = 0  # the crop's lower half blanked, as the engine sends it
    return torch.randn(batch, 1, 80, 16, generator=g) * 2, face


def _official_format(state: dict) -> dict:
    return {"state_dict": {f"module.{k}": v for k, v in state.items()}}


def test_lnet_enet_match_the_official_parameter_layout():
    state = RetalkingENet().state_dict()
    lnet = {k: v for k, v in state.items() if k.startswith("low_res.")}
    own = {k: v for k, v in state.items() if not k.startswith("low_res.")}
    # Counts and sizes as in LNet.pth and ENet.pth less its low_res copy (the official
    # modules' state dicts, spectral norms' u and v and batch norms' statistics included).
    assert (len(lnet), sum(v.numel() for v in lnet.values())) == (1721, 127_826_085)
    assert (len(own), sum(v.numel() for v in own.values())) == (64, 31_197_581)
    expected = {
        "low_res.encoder.first_inp.model.0.weight_v": (147,),
        "low_res.encoder.ca2.layers.1.0.fn.to_v.weight": (256, 512),
        "low_res.encoder.ca2.layers.0.1.fn.net.3.weight": (512, 256),
        "low_res.decoder.res2.res8.conv2.ffc.convg2g.fu.conv_layer.weight": (768, 768, 1, 1),
        "low_res.decoder.res2.res0.conv1.ffc.convl2g.weight": (768, 256, 3, 3),
        "low_res.decoder.res0.res0.conv1.bn_g.mlp_gamma.weight": (96, 128),
        "low_res.decoder.up2.model.0.weight_orig": (256, 1024, 3, 3),
        "low_res.decoder.jump0.model.1.bias": (64, 1, 1),
        "low_res.decoder.final.model.0.weight_u": (3,),
        "low_res.audio_encoder.12.conv_block.0.weight": (512, 512, 1, 1),
        "conv_body_first.weight": (256, 3, 1, 1),
        "conv_body_down.0.conv1.weight": (256, 256, 3, 3),
        "conv_body_down.5.skip.weight": (512, 512, 1, 1),
        "final_linear.weight": (512, 8192),
        "style_convs.0.modulated_conv.weight": (1, 256, 3, 3, 3),
        "style_convs.3.modulated_conv.modulation.weight": (128, 512),
        "style_convs.1.weight": (1,),
        "to_rgbs.1.modulated_conv.weight": (1, 3, 128, 1, 1),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    lnet = {k.removeprefix("low_res."): v for k, v in lnet.items()}
    assert enet_config_from_state(lnet, state) == (
        {"image_nc": 3, "base_nc": 64, "layer": 3, "max_nc": 512, "descriptor_nc": 512,
         "num_res_blocks": 9}, {"num_style_feat": 512, "narrow": 1.0})


def test_enet_loads_official_format_checkpoints_strictly(tmp_path):
    source = _tiny_enet(1)
    lnet_state = source.low_res.state_dict()
    # ENet.pth carries its own, different copy of LNet: the official loader skips it.
    enet_state = {k: v + 1 if k.startswith("low_res.") and v.is_floating_point() else v
                  for k, v in source.state_dict().items()}
    torch.save(_official_format(lnet_state), tmp_path / "LNet.pth")
    torch.save(_official_format(enet_state), tmp_path / "ENet.pth")
    lnet_ckpt = torch.load(tmp_path / "LNet.pth", weights_only=True)
    enet_ckpt = torch.load(tmp_path / "ENet.pth", weights_only=True)

    # Sized from the files alone, as the exporter builds it.
    lnet_config, enet_config = enet_config_from_state(lnet_state, source.state_dict())
    assert (lnet_config, enet_config) == (
        {"image_nc": 3, "base_nc": 4, "layer": 3, "max_nc": 32, "descriptor_nc": 16,
         "num_res_blocks": 1}, {"num_style_feat": 16, "narrow": 1 / 32})
    loaded = _tiny_enet(2)
    skipped = load_official(loaded, lnet_ckpt, enet_ckpt)
    assert sorted(skipped) == sorted(f"low_res.{k}" for k in lnet_state)
    audio, face = _enet_inputs(2)
    u = loaded.low_res.decoder.final.model[0].weight_u.clone()
    with torch.no_grad():
        assert torch.equal(source(audio, face), loaded(audio, face))
    # Eval mode uses the checkpoint's spectral-norm vectors as they are (no power iteration).
    assert torch.equal(loaded.low_res.decoder.final.model[0].weight_u, u)

    # A wrong file is named with its first wrong key.
    del enet_ckpt["state_dict"]["module.final_linear.bias"]
    with pytest.raises(ValueError, match=r"^ENet\.pth: .*missing key final_linear\.bias"):
        load_official(_tiny_enet(2), lnet_ckpt, enet_ckpt)
    lnet_ckpt["state_dict"]["module.decoder.jump0.model.1.bias"] = torch.zeros(5, 1, 1)
    with pytest.raises(ValueError, match=r"^LNet\.pth: .*mis-shaped key decoder\.jump0"):
        load_official(_tiny_enet(2), lnet_ckpt, _official_format(enet_state))


def test_enet_forward_shapes_batch_independence_and_repeatability():
    net = _tiny_enet(3)
    audio, face = _enet_inputs(3, seed=4)
    with torch.no_grad():
        out = net(audio, face)
        again = net(audio, face)
        singles = torch.cat([net(audio[i:i + 1], face[i:i + 1]) for i in range(3)])
        other_audio = net(audio.flip(0), face)
        mouth = net.low_res(audio, face[:, :, ::4, ::4])
    assert out.shape == (3, 3, 384, 384) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert mouth.shape == (3, 3, 96, 96) and 0 <= mouth.min() and mouth.max() <= 1  # sigmoid
    # Fixed noise maps: the same frame gives the same picture on every call.
    assert torch.equal(out, again)
    # Rounding differs with the batch's kernels (~1e-6 here); mixing items moves 1e-2 and more.
    assert torch.allclose(out, singles, atol=1e-4)
    assert (out - other_audio).abs().max() > 1e-3  # the sound drives the mouth


@pytest.mark.parametrize("kernel, demodulate, upsample", [(3, True, True), (3, True, False),
                                                           (1, False, False)])
def test_enet_modulated_conv_equals_the_per_sample_grouped_conv(kernel, demodulate, upsample):
    torch.manual_seed(5)
    conv = ModulatedConv2d(5, 7, kernel, num_style_feat=6, demodulate=demodulate,
                           upsample=upsample)
    x, style = torch.randn(3, 5, 8, 8), torch.randn(3, 6)
    # StyleGAN2's fused form: each sample's weight scaled by its style (and demodulated),
    # the batch folded into the groups of one convolution.
    s = conv.modulation(style)
    weight = conv.weight * s.view(3, 1, 5, 1, 1)
    if demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(3, 7, 1, 1, 1)
    if upsample:
        x_in = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear",
                                               align_corners=False)
    else:
        x_in = x
    size = x_in.shape[-1]
    expected = torch.nn.functional.conv2d(x_in.reshape(1, 15, size, size),
                                          weight.reshape(21, 5, kernel, kernel),
                                          padding=kernel // 2, groups=3).view(3, 7, size, size)
    with torch.no_grad():
        got = conv(x, style)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("h, w", [(12, 12), (24, 24), (7, 9)])
def test_lnet_fourier_matrices_equal_torch_fft(h, w):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, h, w, generator=g)
    spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
    re, im = rfft2_ortho(x)
    assert torch.allclose(re, spectrum.real, atol=1e-5)
    assert torch.allclose(im, spectrum.imag, atol=1e-5)
    # The inverse of any spectrum, not only a real plane's: the Fourier unit's convolution
    # leaves bins 0 and w/2 with imaginary parts the real inverse ignores.
    re, im = torch.randn(2, 3, h, w // 2 + 1, generator=g), torch.randn(2, 3, h, w // 2 + 1,
                                                                         generator=g)
    expected = torch.fft.irfftn(torch.complex(re, im), s=(h, w), dim=(-2, -1), norm="ortho")
    assert torch.allclose(irfft2_ortho(re, im, w), expected, atol=1e-5)


def test_lnet_folded_spectral_norms_give_the_same_picture():
    net = _tiny_enet(7)
    audio, face = _enet_inputs(2, seed=8)
    with torch.no_grad():
        before = net(audio, face)
        fold_spectral_norms(net)
        after = net(audio, face)
    assert not any(k.endswith(("weight_orig", "weight_u", "weight_v")) for k in net.state_dict())
    assert "low_res.decoder.final.model.0.weight" in net.state_dict()
    assert torch.equal(before, after)
