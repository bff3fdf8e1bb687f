"""Model management for issue #14: the MuseTalk, face-parsing and EDTalk manifest entries, ONNX
external data, the studio mirror, truncated downloads, and models converted from official
checkpoints. Downloads run against a local HTTP server; nothing here touches the internet.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from engine import cli
from engine.errors import RedubError
from engine.models import download, manifest, mirror, store
from engine.models.download import download_model, install_models
from engine.models.manifest import checkpoint_sets, load_manifest
from engine.models.session import session_for
from engine.models.store import ModelMissingError, import_model, model_path, model_state
from tests.model_factory import offset_model, restorer_entry, write, write_manifest
from tests.model_server import ModelServer, server, sha  # noqa: F401  (server: a fixture)

MUSETALK = ["musetalk_whisper_encoder", "musetalk_vae_encoder", "musetalk_vae_decoder",
            "musetalk_unet_v15"]


@pytest.fixture
def models(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    monkeypatch.setenv("REDUB_MODELS_DIR", str(folder))
    monkeypatch.delenv(mirror.ENV, raising=False)
    monkeypatch.setattr(download, "CHUNK", 8192)
    return folder


def sums(files: dict[str, bytes]) -> bytes:
    """A SHA256SUMS file as installer.export_musetalk writes it."""
    return "".join(f"{sha(d)}  {len(d)}  {n}\n" for n, d in files.items()).encode()


def external_pair(folder: Path, name: str, offset: float = 0.5) -> tuple[bytes, bytes]:
    """An ``offset_model`` saved in ``folder`` as ``name`` with its weights in ``name.data``
    (ONNX external data), as the fp32 UNet's are: the graph's bytes and the data's."""
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load_from_string(offset_model(offset=offset, bias_size=20_000))
    onnx.save_model(model, folder / name, save_as_external_data=True,
                    all_tensors_to_one_file=True, location=f"{name}.data", size_threshold=0)
    return (folder / name).read_bytes(), (folder / f"{name}.data").read_bytes()


def pair_entry(model_id: str, urls: list[str] | None = None, **fields) -> dict:
    return restorer_entry(model_id, urls or [], data_file=f"{model_id}.onnx.data", **fields)


# --- the shipped manifest -------------------------------------------------------------------

def test_shipped_manifest_describes_musetalk_parsing_and_edtalk():
    entries = load_manifest()
    for fp16 in ("", "_fp16"):
        whisper = entries[f"musetalk_whisper_encoder{fp16}"].contract
        assert [(t.name, t.shape) for t in whisper.inputs] == [("input_features",
                                                               ("B", 80, 3000))]
        assert [(t.name, t.shape) for t in whisper.outputs] == [("hidden_states",
                                                                ("B", 1500, "L", 384))]
        encoder = entries[f"musetalk_vae_encoder{fp16}"].contract
        assert (encoder.inputs[0].name, encoder.inputs[0].shape, encoder.inputs[0].range) == \
            ("image", ("B", 3, 256, 256), (-1.0, 1.0))
        assert (encoder.outputs[0].name, encoder.outputs[0].shape) == ("latents", ("B", 4, 32, 32))
        decoder = entries[f"musetalk_vae_decoder{fp16}"].contract
        assert (decoder.outputs[0].name, decoder.outputs[0].range) == ("image", (0.0, 1.0))
        for version in ("v15", "v10"):
            unet = entries[f"musetalk_unet_{version}{fp16}"]
            assert [(t.name, t.shape) for t in unet.contract.inputs] == [
                ("latents", ("B", 8, 32, 32)), ("audio", ("B", "A", 384))]
            assert [(t.name, t.shape) for t in unet.contract.outputs] == [
                ("pred_latents", ("B", 4, 32, 32))]
            assert unet.convert.version == version and unet.convert.fp16 == bool(fp16)
            # The fp32 UNet keeps its 3.4 GB of weights beside the graph; fp16 fits one file.
            assert unet.data_file == (None if fp16 else f"musetalk_unet_{version}.onnx.data")
    parser = entries["face_parsing_bisenet"]
    assert parser.stage == "parser" and parser.convert.needs == (
        "face-parse-bisent/79999_iter.pth",) and parser.convert.optional
    assert [(t.name, t.shape) for t in parser.contract.outputs] == [("logits",
                                                                    ("B", 19, 512, 512))]
    edtalk = entries["edtalk_256"]
    assert edtalk.urls == ("https://github.com/facefusion/facefusion-assets/releases/download/"
                           "models-3.3.0/edtalk_256.onnx",)
    assert edtalk.hash_url == edtalk.urls[0][:-len(".onnx")] + ".hash"
    assert [t.name for t in edtalk.contract.inputs] == ["source", "target", "weight"]
    assert "Apache-2.0" in edtalk.license and edtalk.convert is None
    # Every converted model is made from files the checkpoint set lists, each with a source.
    files = checkpoint_sets()["musetalk"].files
    assert set(files) == {p for e in entries.values()
                          if e.convert and e.convert.checkpoints == "musetalk"
                          for p in e.convert.needs} | \
        {"musetalkV15/musetalk.json", "musetalk/musetalk.json"}
    assert all(f.urls and f.urls[0].startswith("https://huggingface.co/") for f in files.values())
    assert files["face-parse-bisent/79999_iter.pth"].size == 53289463
    assert manifest.backend_models("generator", "musetalk") == tuple(MUSETALK)
    assert manifest.backend_models("generator", "musetalk_v10")[-1] == "musetalk_unet_v10"
    assert manifest.backend_models("generator", "edtalk") == ("edtalk_256",)
    assert manifest.backend_models("parser", "bisenet") == ("face_parsing_bisenet",)
    assert manifest.backends("generator")["musetalk"] == \
        "engine.lipsync.musetalk:MuseTalkGenerator"


def test_a_converted_model_says_how_to_get_it(models):
    with pytest.raises(ModelMissingError) as err:
        model_path("musetalk_unet_v15")
    message = str(err.value)
    assert "\n" not in message and "redub models download musetalk_unet_v15" in message
    assert "musetalk_unet_v15.onnx + musetalk_unet_v15.onnx.data" in message


# --- external data --------------------------------------------------------------------------

def test_import_of_an_onnx_and_data_pair(models, tmp_path, monkeypatch, capsys):
    path = write_manifest(tmp_path / "manifest.json", [pair_entry("big")])
    monkeypatch.setattr(manifest, "MANIFEST_PATH", path)
    source = tmp_path / "export"
    graph, data = external_pair(source, "big.onnx")
    assert cli.main(["models", "import", str(source / "big.onnx"),
                     str(source / "big.onnx.data")]) == 0
    assert capsys.readouterr().out.strip() == str(models / "big.onnx")
    assert (models / "big.onnx.data").read_bytes() == data
    pins = store.read_pins(models)
    assert pins["big.onnx"]["source"] == pins["big.onnx.data"]["source"] == "import"
    assert pins["big.onnx.data"]["sha256"] == sha(data)
    out = session_for(model_path("big"), "big").run({"input": np.zeros((1, 3, 8, 8),
                                                                       np.float32)})[0]
    assert np.allclose(out, 0.5)

    # The pair is one model: without its data it is missing.
    (models / "big.onnx.data").unlink()
    assert model_state(manifest.get_entry("big")) == "missing"
    with pytest.raises(ModelMissingError):
        model_path("big")
    import_model(source / "big.onnx", "big")  # its data found beside it: whole again
    assert model_state(manifest.get_entry("big")) == "verified"

    # Damaged weights, same size and time: a full check finds them, naming the data file.
    st = (models / "big.onnx.data").stat()
    damaged = bytearray(data)
    damaged[-1] ^= 0xFF
    (models / "big.onnx.data").write_bytes(bytes(damaged))
    os.utime(models / "big.onnx.data", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cli.main(["models", "verify", "big"]) == 1
    assert f"{models / 'big.onnx.data'}: is damaged" in capsys.readouterr().out
    import_model(source / "big.onnx", "big", data=source / "big.onnx.data")

    # A graph imported without its weights is refused and the installed model kept.
    lone = tmp_path / "lone"
    external_pair(lone, "big.onnx", offset=2.0)
    (lone / "big.onnx.data").unlink()
    with pytest.raises(RedubError, match="cannot load") as err:
        import_model(lone / "big.onnx", "big")
    assert "\n" not in str(err.value)
    assert (models / "big.onnx.data").read_bytes() == data
    assert model_state(manifest.get_entry("big")) == "verified"
    assert not list(models.glob(".staging-*"))


# --- the mirror -----------------------------------------------------------------------------

def test_mirror_setting_is_shared_and_the_environment_wins(models, tmp_path, monkeypatch,
                                                            capsys):
    assert mirror.mirror_url() is None
    assert cli.main(["models", "mirror", "https://models.studio.example/redub/"]) == 0
    assert capsys.readouterr().out.strip() == "https://models.studio.example/redub"
    assert mirror.mirror_url() == "https://models.studio.example/redub"
    assert cli.main(["models", "mirror", str(tmp_path)]) == 0  # a share mounted as a folder
    assert mirror.mirror_url() == tmp_path.resolve().as_uri()
    monkeypatch.setenv(mirror.ENV, "http://127.0.0.1:9/m")
    assert mirror.mirror_url() == "http://127.0.0.1:9/m"
    monkeypatch.delenv(mirror.ENV)
    assert cli.main(["models", "mirror", "--clear"]) == 0
    assert mirror.mirror_url() is None
    assert cli.main(["models", "mirror", "no-such-folder"]) == 2
    assert "neither an http(s):// or file:// URL" in capsys.readouterr().err


def test_mirror_is_tried_first_and_falls_back_to_the_official_url(models, tmp_path,
                                                                  monkeypatch, server):
    good, other = offset_model(bias_size=30_000), offset_model(offset=3.0)
    server.files["official/m.onnx"] = good
    path = write_manifest(tmp_path / "manifest.json", [
        restorer_entry("m", [server.url("official/m.onnx")], sha256=sha(good)),
        restorer_entry("n", [server.url("official/n.onnx")])])
    monkeypatch.setattr(manifest, "MANIFEST_PATH", path)
    mirror.set_mirror(server.url("studio"))

    # The mirror has it: the official server is not asked.
    server.files["studio/m.onnx"] = good
    assert download_model("m").read_bytes() == good
    assert [r[0] for r in server.requests] == ["studio/m.onnx"]

    # The mirror lacks it: the official URL serves it.
    del server.files["studio/m.onnx"]
    server.requests.clear()
    assert download_model("m", force=True).read_bytes() == good
    assert [r[0] for r in server.requests][-2:] == ["studio/m.onnx", "official/m.onnx"]

    # The mirror's copy differs from what its SHA256SUMS says: removed, the official one used.
    server.files["studio/n.onnx"] = other
    server.files["studio/SHA256SUMS"] = sums({"n.onnx": offset_model()})
    server.files["official/n.onnx"] = offset_model()
    server.requests.clear()
    assert download_model("n").read_bytes() == offset_model()
    assert [r[0] for r in server.requests] == ["studio/n.onnx", "studio/SHA256SUMS",
                                               "official/n.onnx"]
    assert store.read_pins(models)["n.onnx"]["sha256"] == sha(offset_model())

    # A mirror on a mounted share, given as a folder.
    share = tmp_path / "share"
    share.mkdir()
    write(share / "n.onnx", other)
    write(share / "SHA256SUMS", sums({"n.onnx": other}))
    server.requests.clear()
    assert download_model("n", force=True, mirror=str(share)).read_bytes() == other
    assert server.requests == []


def test_mirror_serves_converted_models_with_their_data(models, tmp_path, monkeypatch,
                                                        server):
    graph, data = external_pair(tmp_path / "export", "big.onnx")
    server.files.update({"studio/big.onnx": graph, "studio/big.onnx.data": data,
                         "studio/SHA256SUMS": sums({"big.onnx": graph,
                                                    "big.onnx.data": data})})
    # A model with no public file: only the studio's mirror has it.
    path = write_manifest(tmp_path / "manifest.json", [pair_entry("big")])
    monkeypatch.setattr(manifest, "MANIFEST_PATH", path)
    with pytest.raises(ModelMissingError, match="redub models import FILE --id big"):
        download_model("big")  # no mirror, no source
    assert install_models(["big"], mirror=server.url("studio")) == [models / "big.onnx"]
    assert (models / "big.onnx.data").read_bytes() == data
    assert [r[0] for r in server.requests] == ["studio/big.onnx", "studio/big.onnx.data",
                                               "studio/SHA256SUMS"]
    assert store.read_pins(models)["big.onnx.data"]["source"] == "download"


# --- truncated downloads --------------------------------------------------------------------

def test_a_cut_download_fails_in_one_line_leaves_no_model_and_resumes(models, tmp_path,
                                                                     monkeypatch, server):
    graph, data = external_pair(tmp_path / "export", "big.onnx")
    server.files.update({"studio/big.onnx": graph, "studio/big.onnx.data": data})
    server.drop_after["studio/big.onnx.data"] = len(data) // 3
    path = write_manifest(tmp_path / "manifest.json", [pair_entry("big")])
    monkeypatch.setattr(manifest, "MANIFEST_PATH", path)
    monkeypatch.setattr(download, "RETRIES", 0)  # the server cuts once; no second try now
    with pytest.raises(RedubError) as err:
        download_model("big", mirror=server.url("studio"))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{models / 'big.onnx'}: download of "
                                                      "'big' failed: ")
    assert "connection closed after" in message and "run again to resume" in message
    # Neither file of the pair is in place: the graph waits as a part beside the data's part.
    assert not (models / "big.onnx").exists() and not (models / "big.onnx.data").exists()
    kept = (models / "big.onnx.data.part").stat().st_size
    assert 0 < kept < len(data) and model_state(manifest.get_entry("big")) == "missing"

    monkeypatch.setattr(download, "RETRIES", 5)
    assert download_model("big", mirror=server.url("studio")) == models / "big.onnx"
    assert ("studio/big.onnx.data", f"bytes={kept}-") in server.requests
    assert (models / "big.onnx.data").read_bytes() == data
    assert not list(models.glob("*.part"))


def test_a_cut_download_resumes_within_the_call(models, tmp_path, monkeypatch, server):
    model = offset_model(bias_size=50_000)
    server.files["m.onnx"] = model
    server.drop_after["m.onnx"] = 70_000
    path = write_manifest(tmp_path / "manifest.json",
                          [restorer_entry("m", [server.url("m.onnx")], sha256=sha(model))])
    monkeypatch.setattr(manifest, "MANIFEST_PATH", path)
    assert download_model("m").read_bytes() == model
    assert server.requests == [("m.onnx", None), ("m.onnx", "bytes=70000-")]


# --- checkpoints converted on the user's machine ----------------------------------------------

@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """Tiny official-format MuseTalk checkpoints, written once for this module."""
    from tests.musetalk_factory import write_official_checkpoints

    return write_official_checkpoints(tmp_path_factory.mktemp("upstream"), tiny=True)


@pytest.fixture
def official(upstream, tmp_path, monkeypatch, server):
    """The shipped manifest with the checkpoint set's URLs on the local server, serving the
    tiny checkpoints (their real sha256 and sizes in the manifest)."""
    serve_checkpoints(server, tmp_path, monkeypatch, upstream)
    return server


def serve_checkpoints(server: ModelServer, tmp_path: Path, monkeypatch,
                      root: Path | None, name: str = "musetalk") -> None:
    """Point the shipped manifest's URLs of checkpoint set ``name`` at ``server``, serving the
    files under ``root`` (none when ``root`` is None)."""
    data = json.loads(manifest.MANIFEST_PATH.read_text(encoding="utf-8"))
    for spec in data["checkpoints"][name]["files"]:
        spec.update(urls=[server.url(f"hf/{spec['path']}")], sha256=None, size=None)
        if root is not None:
            body = (root / spec["path"]).read_bytes()
            server.files[f"hf/{spec['path']}"] = body
            spec.update(sha256=sha(body), size=len(body))
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    monkeypatch.setattr(manifest, "MANIFEST_PATH", path)


@pytest.mark.slow  # about a minute on two cores: the exporter converts and checks 4 networks
@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None,
                    reason="the export extra is not installed")
def test_musetalk_is_downloaded_as_checkpoints_and_converted(models, official, capsys):
    seen = []
    paths = install_models(MUSETALK, progress=lambda *report: seen.append(report))
    assert paths == [models / f"{m}.onnx" for m in MUSETALK]
    fetched = [r[0] for r in official.requests]
    # Only what the v1.5 conversion reads: no v1.0 UNet, no face parsing.
    assert sorted(fetched) == sorted(f"hf/{p}" for p in (
        "musetalkV15/musetalk.json", "musetalkV15/unet.pth", "sd-vae/config.json",
        "sd-vae/diffusion_pytorch_model.bin", "whisper/config.json",
        "whisper/pytorch_model.bin", "whisper/preprocessor_config.json"))
    assert (models / "checkpoints" / "musetalkV15" / "unet.pth").is_file()
    # One job, two phases through one callback: bytes of each checkpoint, then networks.
    stages = list(dict.fromkeys(stage for stage, _, _ in seen))
    downloads = [s for s in stages if not s.startswith("convert ")]
    converts = [s for s in stages if s.startswith("convert ")]
    assert set(downloads) == {f[len("hf/"):] for f in fetched}
    assert stages == downloads + converts and "convert musetalk_unet_v15" in converts
    unet_bytes = [(d, t) for s, d, t in seen if s == "musetalkV15/unet.pth"]
    assert unet_bytes[-1][0] == unet_bytes[-1][1] > 0
    assert seen[-1][1] == seen[-1][2] > 0  # the conversion's last report: all done
    pins = store.read_pins(models)
    assert all(pins[f"{m}.onnx"]["source"] == "convert" for m in MUSETALK)
    for m in MUSETALK:
        assert model_state(manifest.get_entry(m)) == "verified"
        session_for(model_path(m), m)
    assert not list(models.glob(".staging-*"))

    # Installed: nothing is fetched or converted again, whichever way it is asked for.
    count, seen[:] = len(official.requests), []
    assert cli.main(["models", "download", "musetalk"]) == 0
    assert capsys.readouterr().out.split() == [str(p) for p in paths]
    assert len(official.requests) == count


def test_a_missing_export_extra_is_one_line_before_any_download(models, server, tmp_path,
                                                                monkeypatch, capsys):
    serve_checkpoints(server, tmp_path, monkeypatch, None)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    assert cli.main(["models", "download", "musetalk"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "needs the export extra (torch is not installed): pip install -e \".[export]\"" in err
    assert "redub models import FILE" in err and "redub models mirror URL" in err
    assert server.requests == [] and not (models / "checkpoints").exists()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="the export extra is not installed")
def test_a_damaged_checkpoint_download_is_removed(models, server, tmp_path, monkeypatch):
    serve_checkpoints(server, tmp_path, monkeypatch, None)
    data = json.loads(manifest.MANIFEST_PATH.read_text(encoding="utf-8"))
    spec = next(f for f in data["checkpoints"]["musetalk"]["files"]
                if f["path"] == "whisper/config.json")
    spec["sha256"] = sha(b'{"d_model": 384}')
    manifest.MANIFEST_PATH.write_text(json.dumps(data), encoding="utf-8")
    server.files["hf/whisper/config.json"] = b'{"d_model": 999}'
    with pytest.raises(RedubError) as err:
        install_models(["musetalk_whisper_encoder"])
    assert str(err.value) == (
        f"{models / 'checkpoints' / 'whisper' / 'config.json'}: the download from "
        f"{server.url('hf/whisper/config.json')} was removed: sha256 "
        f"{sha(server.files['hf/whisper/config.json'])}, expected {spec['sha256']}")
    assert not list((models / "checkpoints" / "whisper").iterdir())
    assert not (models / "musetalk_whisper_encoder.onnx").exists()
