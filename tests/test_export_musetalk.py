"""The MuseTalk exporter: official checkpoint layout in, the engine's ONNX files out, each
checked against torch; broken checkpoints refused in one line, leaving nothing behind."""
from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

import installer.export_musetalk as em  # noqa: E402
import installer.onnx_export as oe  # noqa: E402
from engine.errors import RedubError  # noqa: E402
from tests.musetalk_factory import write_official_checkpoints  # noqa: E402

IDS = ["musetalk_unet_v15", "musetalk_vae_encoder", "musetalk_vae_decoder",
       "musetalk_whisper_encoder", "face_parsing_bisenet"]
FIGURE = re.compile(r"^(\S+): .*max \|onnxruntime - torch\| (\S+) \(tolerance (\S+)\)$")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    return write_official_checkpoints(tmp_path_factory.mktemp("musetalk") / "checkpoints")


@pytest.fixture(scope="module")
def cli_run(checkpoints, tmp_path_factory):
    """The command line on the tiny set (v1.5), fp32 and fp16: (out folder, stdout)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("musetalk_onnx")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = em.main([str(checkpoints), "-o", str(out), "--fp16"])
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue()


def test_every_network_is_exported_and_agrees_with_torch(cli_run):
    out, log = cli_run
    figures = {m[1]: (float(m[2]), float(m[3]))
               for m in map(FIGURE.match, log.splitlines()) if m}
    assert sorted(figures) == sorted(IDS + [f"{i}_fp16" for i in IDS])
    for model_id, (difference, tolerance) in figures.items():
        assert difference <= tolerance, model_id
        # fp32 graphs agree far inside their tolerance; fp16 ones to a few thousandths.
        assert difference < (2e-2 if model_id.endswith("_fp16") else 1e-4), model_id
    assert [f"[{i + 1}/5] {model_id}" for i, model_id in enumerate(IDS)] == \
        [line for line in log.splitlines() if line.startswith("[")]
    # Small networks are single files; nothing half-written is left behind.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{i}.onnx" for i in IDS] + [f"{i}_fp16.onnx" for i in IDS] + ["SHA256SUMS"])


def test_sha256sums_lists_every_file_with_its_size(cli_run):
    out, _ = cli_run
    lines = (out / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, size, name = line.split("  ")
        listed[name] = (digest, int(size))
    assert sorted(listed) == sorted(p.name for p in out.glob("*.onnx"))
    for name, (digest, size) in listed.items():
        data = (out / name).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (digest, size)


def test_files_follow_the_contract(cli_run):
    out, _ = cli_run
    contract = {  # id -> (inputs as name: dims, output name, output shape for batch 1)
        "musetalk_whisper_encoder": ({"input_features": ["B", 80, 3000]}, "hidden_states",
                                     (1, 1500, 5, 384)),
        "musetalk_vae_encoder": ({"image": ["B", 3, 256, 256]}, "latents", (1, 4, 32, 32)),
        "musetalk_vae_decoder": ({"latents": ["B", 4, 32, 32]}, "image", (1, 3, 256, 256)),
        "musetalk_unet_v15": ({"latents": ["B", 8, 32, 32], "audio": ["B", "A", 384]},
                              "pred_latents", (1, 4, 32, 32)),
        "face_parsing_bisenet": ({"image": ["B", 3, 512, 512]}, "logits", (1, 19, 512, 512)),
    }
    rng = np.random.default_rng(5)
    for model_id, (inputs, output, shape) in contract.items():
        for suffix, weight_type in (("", onnx.TensorProto.FLOAT),
                                    ("_fp16", onnx.TensorProto.FLOAT16)):
            path = out / f"{model_id}{suffix}.onnx"
            graph = onnx.load(path).graph
            dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                    for i in graph.input}
            assert dims == inputs, path.name
            assert [o.name for o in graph.output] == [output]
            # Float32 in and out, also for the fp16 files (whose weights are float16).
            assert {i.type.tensor_type.elem_type for i in (*graph.input, *graph.output)} == \
                {onnx.TensorProto.FLOAT}
            big = [t for t in graph.initializer if np.prod(t.dims) > 1000 and t.data_type in
                   (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
            assert big and all(t.data_type == weight_type for t in big), path.name
            # No stack traces naming the machine it was made on.
            assert not any(n.metadata_props for n in graph.node) and b"/" not in b"".join(
                n.doc_string.encode() for n in graph.node), path.name
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            # Batch 1, and 30 audio rows: both sizes are free.
            feeds = {name: rng.standard_normal([{"B": 1, "A": 30}.get(d, d) for d in shape_in])
                     .astype(np.float32) for name, shape_in in inputs.items()}
            result = session.run(None, feeds)[0]
            assert result.shape == shape and result.dtype == np.float32, path.name
            if model_id == "musetalk_vae_decoder":
                assert 0 <= result.min() and result.max() <= 1


def test_exports_match_the_official_loaders_and_pipeline(checkpoints, cli_run):
    """The files against what MuseTalk itself computes: diffusers' and transformers' own
    ``from_pretrained`` (which rename the VAE's old attention keys and strip Whisper's
    "model." prefix), the UNet at timestep 0 with the positional encoding added to the audio."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperModel

    out, _ = cli_run
    rng = np.random.default_rng(11)

    def run(model_id, **feeds):
        session = ort.InferenceSession(out / f"{model_id}.onnx",
                                       providers=["CPUExecutionProvider"])
        return session.run(None, feeds)[0]

    vae = AutoencoderKL.from_pretrained(checkpoints / "sd-vae").eval()
    image = rng.uniform(-1, 1, (2, 3, 256, 256)).astype(np.float32)
    latents = rng.standard_normal((2, 4, 32, 32)).astype(np.float32)
    with torch.no_grad():
        encoded = vae.encode(torch.from_numpy(image)).latent_dist.mean * 0.18215
        decoded = (vae.decode(torch.from_numpy(latents) / 0.18215).sample / 2 + 0.5).clamp(0, 1)
    assert np.abs(run("musetalk_vae_encoder", image=image) - encoded.numpy()).max() < 1e-4
    assert np.abs(run("musetalk_vae_decoder", latents=latents) - decoded.numpy()).max() < 1e-4

    whisper = WhisperModel.from_pretrained(checkpoints / "whisper").eval()
    features = rng.uniform(-1, 1, (1, 80, 3000)).astype(np.float32)
    with torch.no_grad():
        states = torch.stack(whisper.encoder(torch.from_numpy(features),
                                             output_hidden_states=True).hidden_states, dim=2)
    assert np.abs(run("musetalk_whisper_encoder", input_features=features)
                  - states.numpy()).max() < 1e-4

    unet = UNet2DConditionModel(**json.loads(
        (checkpoints / "musetalkV15" / "musetalk.json").read_text()))
    unet.load_state_dict(torch.load(checkpoints / "musetalkV15" / "unet.pth"))
    audio = rng.standard_normal((2, 50, 384)).astype(np.float32)
    pair = rng.standard_normal((2, 8, 32, 32)).astype(np.float32)
    position = np.arange(50)[:, None]
    rate = 10000.0 ** (-np.arange(0, 384, 2) / 384)
    pe = np.stack([np.sin(position * rate), np.cos(position * rate)], axis=-1).reshape(50, 384)
    with torch.no_grad():
        expected = unet.eval()(torch.from_numpy(pair), torch.tensor([0]),
                               encoder_hidden_states=torch.from_numpy(audio + pe).float()).sample
    assert np.abs(run("musetalk_unet_v15", latents=pair, audio=audio)
                  - expected.numpy()).max() < 1e-4


def test_versions_read_their_own_checkpoints(checkpoints):
    assert [n.model_id for n in em.networks_to_export(checkpoints, ("v15", "v10"))][:2] == \
        ["musetalk_unet_v15", "musetalk_unet_v10"]
    latents, audio = torch.randn(1, 8, 32, 32), torch.randn(1, 50, 384)
    with torch.no_grad():
        v15, v10 = (em.load_unet(checkpoints, v)(latents, audio) for v in ("v15", "v10"))
    assert (v15 - v10).abs().max() > 1e-2  # musetalk/pytorch_model.bin's other weights


def _only(monkeypatch, *model_ids: str) -> None:
    """Export just these networks (for the tests of failures and file layout)."""
    full = em.networks_to_export
    monkeypatch.setattr(em, "networks_to_export", lambda folder, versions: [
        n for n in full(folder, versions) if n.model_id in model_ids])


def test_large_networks_keep_their_weights_in_one_data_file(checkpoints, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(oe, "SINGLE_FILE_LIMIT", 100_000)  # the tiny VAE decoder: ~1.4 MB
    _only(monkeypatch, "musetalk_vae_decoder")
    exported = em.export(checkpoints, tmp_path, fp16=True)
    fp32, fp16 = exported
    assert [f.name for f in fp32.files] == ["musetalk_vae_decoder.onnx",
                                            "musetalk_vae_decoder.onnx.data"]
    assert [f.name for f in fp16.files] == ["musetalk_vae_decoder_fp16.onnx",
                                            "musetalk_vae_decoder_fp16.onnx.data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f.name for e in exported for f in e.files)
    graph = onnx.load(fp32.path, load_external_data=False).graph
    locations = {entry.value for t in graph.initializer
                 if t.data_location == onnx.TensorProto.EXTERNAL
                 for entry in t.external_data if entry.key == "location"}
    assert locations == {"musetalk_vae_decoder.onnx.data"}
    assert fp32.path.stat().st_size < fp32.files[1].stat().st_size  # the weights moved out
    # Checked while staged, then moved: the graph still finds its data where it now lies.
    latents = np.zeros((1, 4, 32, 32), np.float32)
    for e in exported:
        session = ort.InferenceSession(e.path, providers=["CPUExecutionProvider"])
        assert session.run(None, {"latents": latents})[0].shape == (1, 3, 256, 256)
    assert fp32.difference < 1e-4 and fp16.difference < 2e-2


def test_an_unfaithful_export_is_refused_and_removed(checkpoints, tmp_path, monkeypatch):
    real_export = oe._export_onnx

    def tampered(module, network, path):
        real_export(module, network, path)
        proto = onnx.load(path)
        conv = next(n for n in reversed(proto.graph.node) if n.op_type == "Conv")
        weight = next(t for t in proto.graph.initializer if t.name == conv.input[1])
        values = onnx.numpy_helper.to_array(weight).copy()
        values.flat[:8] += 0.5
        weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        onnx.save(proto, path)

    monkeypatch.setattr(oe, "_export_onnx", tampered)
    _only(monkeypatch, "musetalk_vae_encoder")
    with pytest.raises(RedubError, match=r"/musetalk_vae_encoder.onnx: parity check failed"):
        em.export(checkpoints, tmp_path)
    assert list(tmp_path.iterdir()) == []


def _copy_with(checkpoints: Path, folder: Path, replaced: str) -> Path:
    """The checkpoint set as links, but for the file ``replaced`` (the test writes it)."""
    for path in checkpoints.rglob("*"):
        if path.is_file() and path.relative_to(checkpoints).as_posix() != replaced:
            link = folder / path.relative_to(checkpoints)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return folder


def _fails(args: list[str], capsys) -> str:
    assert em.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_wrong_keys_are_named(checkpoints, tmp_path, capsys):
    name = "musetalkV15/unet.pth"
    broken = _copy_with(checkpoints, tmp_path / "ck", name)
    state = torch.load(checkpoints / name)
    del state["conv_out.bias"]
    state["conv_out.extra"] = torch.zeros(1)
    torch.save(state, broken / name)
    err = _fails([str(broken), "-o", str(tmp_path / "out")], capsys)
    assert err.startswith(f"export_musetalk: error: {broken / name}: not the MuseTalk v15 UNet")
    assert "missing key conv_out.bias (and 1 more differences)" in err
    assert list((tmp_path / "out").iterdir()) == []


def test_wrong_shapes_are_named_and_earlier_exports_removed(checkpoints, tmp_path, capsys,
                                                            monkeypatch):
    name = "whisper/pytorch_model.bin"
    broken = _copy_with(checkpoints, tmp_path / "ck", name)
    state = torch.load(checkpoints / name)
    state["model.encoder.conv1.weight"] = state["model.encoder.conv1.weight"][:, :40]
    torch.save(state, broken / name)
    # The VAE encoder is exported first, then Whisper fails: the VAE's file must go too.
    _only(monkeypatch, "musetalk_vae_encoder", "musetalk_whisper_encoder")
    err = _fails([str(broken), "-o", str(tmp_path / "out")], capsys)
    assert err == (f"export_musetalk: error: {broken / name}: not the Whisper model of "
                   "whisper/config.json: mis-shaped key encoder.conv1.weight (384, 40, 3), "
                   "expected (384, 80, 3)")
    assert list((tmp_path / "out").iterdir()) == []


def test_truncated_checkpoint_and_missing_parser(checkpoints, tmp_path, capsys):
    name = "musetalkV15/unet.pth"
    broken = _copy_with(checkpoints, tmp_path / "ck", name)
    (broken / name).write_bytes((checkpoints / name).read_bytes()[:100_000])
    (broken / em.PARSING_FILE).unlink()
    assert em.main([str(broken), "-o", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == (f"export_musetalk: {broken / em.PARSING_FILE} not found: face parsing "
                        "(face_parsing_bisenet) skipped")
    assert lines[1].startswith(f"export_musetalk: error: {broken / name}: cannot read the "
                               "checkpoint (")
    assert len(lines) == 2
    assert list((tmp_path / "out").iterdir()) == []
    assert "face_parsing_bisenet" not in [
        n.model_id for n in em.networks_to_export(broken, ("v15", "v10"))]


def test_unreadable_config_is_named(checkpoints, tmp_path, capsys):
    name = "musetalkV15/musetalk.json"
    broken = _copy_with(checkpoints, tmp_path / "ck", name)
    (broken / name).write_text('{"act_fn": "silu",', encoding="utf-8")
    err = _fails([str(broken), "-o", str(tmp_path / "out")], capsys)
    assert err.startswith(f"export_musetalk: error: {broken / name}: cannot read the config "
                          "(JSONDecodeError: ")


def test_missing_export_extra_is_named(checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers now fails
    err = _fails([str(checkpoints), "-o", str(tmp_path / "out")], capsys)
    assert err == ('export_musetalk: error: diffusers is missing: install the export extra: '
                   'pip install -e ".[export]"')
    assert not (tmp_path / "out").exists()
