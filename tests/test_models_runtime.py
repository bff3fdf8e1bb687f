"""The model runtime: manifest, verified resumable downloads, local store, ONNX sessions, CLI.

Downloads run against a local HTTP server on 127.0.0.1; nothing here touches the internet.
"""
from __future__ import annotations

import json
import os
import warnings
import zlib

import numpy as np
import pytest

from engine import cli
from engine.errors import Cancelled, RedubError, UsageError
from engine.models import download, manifest, session, store
from engine.models.download import download_model
from engine.models.manifest import Contract, TensorSpec, load_manifest
from engine.models.session import check_contract, providers, session_for
from engine.models.store import ModelMissingError, import_model, model_path, model_state
from engine.progress import CancelToken
from tests.conftest import SHARED
from tests.model_factory import (offset_model, restorer_entry, weighted_model, write,
                                 write_manifest)
from tests.model_server import ModelServer, server, sha, unused_port  # noqa: F401  (server: a fixture)

BIG = offset_model(bias_size=60_000)  # about 240 kB: many chunks at the tests' chunk size


@pytest.fixture
def models(tmp_path, monkeypatch):
    """The model folder (REDUB_MODELS_DIR) for this test."""
    folder = tmp_path / "models"
    monkeypatch.setenv("REDUB_MODELS_DIR", str(folder))
    monkeypatch.setattr(download, "CHUNK", 8192)
    return folder


@pytest.fixture
def use_manifest(tmp_path, monkeypatch):
    """Install a test manifest of the given entries in place of resources/models.json."""
    def install(*entries: dict):
        path = write_manifest(tmp_path / f"manifest{len(list(tmp_path.glob('manifest*')))}.json",
                              list(entries))
        monkeypatch.setattr(manifest, "MANIFEST_PATH", path)
        return path
    return install


# --- the shipped manifest -------------------------------------------------------------------

def test_shipped_manifest_lists_every_stage_with_sources_and_contracts():
    entries = load_manifest()
    assert {"wav2lip_96", "wav2lip_gan_96", "gfpgan_1.4", "gpen_bfr_512", "codeformer",
            "scrfd_2.5g", "2dfan4"} <= set(entries)
    assert {e.stage for e in entries.values()} == set(manifest.STAGES)
    for e in entries.values():
        assert e.contract.inputs and e.contract.outputs and e.license
        for url in e.urls:
            # facefusion-assets publishes a CRC32 companion beside every model file.
            assert url.startswith("https://github.com/facefusion/facefusion-assets/releases/")
            assert e.sha256 or e.hash_url == url[:-len(".onnx")] + ".hash"
    w2l = entries["wav2lip_96"].contract
    assert [(t.name, t.shape) for t in w2l.inputs] == [("source", ("B", 1, 80, 16)),
                                                       ("target", ("B", 6, 96, 96))]
    assert [t.name for t in entries["codeformer"].contract.inputs] == ["input", "weight"]


def test_shipped_scrfd_entry_pins_the_shared_file():
    path = SHARED / "models" / "scrfd_2.5g_bnkps.onnx"
    if not path.exists():
        pytest.skip("shared models not available")
    entry = load_manifest()["scrfd_2.5g"]
    assert entry.sha256 == sha(path.read_bytes()) and entry.size == path.stat().st_size
    check_contract(session.load_session(path, "SCRFD"), entry.contract, path)


def test_manifest_errors_name_the_file(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(RedubError, match="not valid JSON") as err:
        load_manifest(bad)
    assert str(bad) in str(err.value)
    write_manifest(bad, [restorer_entry("x", [], stage="painter")])
    with pytest.raises(RedubError, match="stage 'painter'"):
        load_manifest(bad)
    with pytest.raises(UsageError, match="unknown model 'nope'"):
        manifest.get_entry("nope")


# --- downloads ------------------------------------------------------------------------------

def test_download_resumes_after_a_dropped_connection(models, use_manifest, server):
    server.files["m.onnx"] = BIG
    server.drop_after["m.onnx"] = 100_000
    use_manifest(restorer_entry("m", [server.url("m.onnx")], sha256=sha(BIG)))
    seen = []
    path = download_model("m", progress=lambda done, total: seen.append((done, total)))
    assert path == models / "m.onnx" and path.read_bytes() == BIG
    assert server.requests == [("m.onnx", None), ("m.onnx", "bytes=100000-")]
    assert seen[-1] == (len(BIG), len(BIG))
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    assert not (models / "m.onnx.part").exists()
    assert model_state(manifest.get_entry("m")) == "verified"
    # Verified and pinned: asking again fetches nothing.
    assert download_model("m") == path and len(server.requests) == 2


def test_cancelled_download_keeps_its_part_and_the_next_call_resumes(models, use_manifest,
                                                                      server):
    server.files["m.onnx"] = BIG
    use_manifest(restorer_entry("m", [server.url("m.onnx")], sha256=sha(BIG)))
    token = CancelToken()

    def cancel_midway(done, total):
        if done >= 50_000:
            token.cancel()

    with pytest.raises(Cancelled):
        download_model("m", progress=cancel_midway, cancel=token)
    part = models / "m.onnx.part"
    kept = part.stat().st_size
    assert 50_000 <= kept < len(BIG) and not (models / "m.onnx").exists()
    assert download_model("m").read_bytes() == BIG
    assert server.requests[-1] == ("m.onnx", f"bytes={kept}-")


def test_server_ignoring_range_restarts_from_zero(models, use_manifest, server):
    server.files["m.onnx"] = BIG
    server.drop_after["m.onnx"] = 70_000
    server.ignore_range = True
    use_manifest(restorer_entry("m", [server.url("m.onnx")], sha256=sha(BIG)))
    assert download_model("m").read_bytes() == BIG


def test_download_keeps_a_good_copy_and_replaces_a_damaged_one(models, use_manifest,
                                                                server):
    server.files["m.onnx"] = BIG
    use_manifest(restorer_entry("m", [server.url("m.onnx")], sha256=sha(BIG)))
    models.mkdir()
    write(models / "m.onnx", BIG)  # copied in by hand
    assert download_model("m").read_bytes() == BIG and server.requests == []
    write(models / "m.onnx", BIG[:-10])
    assert download_model("m").read_bytes() == BIG and len(server.requests) == 1


def test_wrong_checksum_is_rejected_and_the_file_removed(models, use_manifest, server):
    server.files["m.onnx"] = BIG
    wrong = "0" * 64
    use_manifest(restorer_entry("m", [server.url("m.onnx")], sha256=wrong))
    with pytest.raises(RedubError) as err:
        download_model("m")
    message = str(err.value)
    assert f"sha256 {sha(BIG)}, expected {wrong}" in message and "removed" in message
    assert str(models / "m.onnx") in message
    assert not any(models.glob("m.onnx*"))


def test_crc32_companion_verifies_the_download(models, use_manifest, server):
    model = offset_model()
    server.files["good.onnx"] = model
    server.files["good.hash"] = f"{zlib.crc32(model):08x}\n".encode()
    server.files["bad.onnx"] = model
    server.files["bad.hash"] = b"deadbeef"
    use_manifest(restorer_entry("good", [server.url("good.onnx")],
                                hash_url=server.url("good.hash")),
                 restorer_entry("bad", [server.url("bad.onnx")], hash_url=server.url("bad.hash")))
    assert download_model("good").read_bytes() == model
    pin = store.read_pins(models)["good.onnx"]
    assert pin["sha256"] == sha(model) and pin["source"] == "download"
    with pytest.raises(RedubError, match=f"CRC32 {zlib.crc32(model):08x}, expected deadbeef"):
        download_model("bad")
    assert not any(models.glob("bad.onnx*"))


def test_without_a_published_checksum_the_contract_decides(models, use_manifest, server):
    server.files["fits.onnx"] = offset_model()
    server.files["misfit.onnx"] = offset_model(input_name="image")
    use_manifest(restorer_entry("fits", [server.url("fits.onnx")]),
                 restorer_entry("misfit", [server.url("misfit.onnx")]))
    assert store.read_pins(download_model("fits").parent)["fits.onnx"]["sha256"] == \
        sha(server.files["fits.onnx"])
    with pytest.raises(RedubError, match="has no input 'input' \\(its inputs: 'image'\\)"):
        download_model("misfit")
    assert not any(models.glob("misfit.onnx*"))


def test_mirrors_are_tried_in_order(models, use_manifest, server):
    server.files["m.onnx"] = BIG
    use_manifest(restorer_entry("m", [server.url("missing.onnx"), server.url("m.onnx")],
                                sha256=sha(BIG)))
    assert download_model("m").read_bytes() == BIG
    assert [r[0] for r in server.requests] == ["missing.onnx", "m.onnx"]


def test_offline_says_which_file_to_put_where(models, use_manifest):
    url = f"http://127.0.0.1:{unused_port()}/m.onnx"
    use_manifest(restorer_entry("m", [url]))
    with pytest.raises(ModelMissingError) as err:
        download_model("m", timeout=5)
    message = str(err.value)
    assert message.startswith(f"{models / 'm.onnx'}: offline: cannot reach 127.0.0.1")
    assert url in message and "redub models download m" in message


def test_backends_fetch_their_models_on_first_use(models, use_manifest, server):
    server.files["m.onnx"] = BIG
    path = use_manifest(restorer_entry("m", [server.url("m.onnx")], sha256=sha(BIG)))
    data = json.loads(path.read_text())
    data["backends"] = {"restorer": {"fake": {"factory": "engine.restore.backend:NoRestorer",
                                              "models": ["m"]}}}
    path.write_text(json.dumps(data))
    needed = manifest.backend_models("restorer", "fake")
    assert needed == ("m",) and manifest.backend_models("restorer", "other") == ()
    with pytest.raises(ModelMissingError, match="redub models download m"):
        download.ensure_models(needed, offline=True)
    assert server.requests == []  # offline: not even tried
    seen = []
    paths = download.ensure_models(needed, offline=False,
                                   progress=lambda i: lambda d, t: seen.append((i, d, t)))
    assert paths == [models / "m.onnx"] and paths[0].read_bytes() == BIG
    assert seen[-1] == ("m", len(BIG), len(BIG))
    requests = len(server.requests)
    assert download.ensure_models(needed, offline=False) == paths  # installed: no download
    assert len(server.requests) == requests


def test_missing_model_is_reported_with_its_source(models, use_manifest):
    use_manifest(restorer_entry("m", ["https://example.invalid/m.onnx"]),
                 restorer_entry("own", []))
    with pytest.raises(ModelMissingError, match="download https://example.invalid/m.onnx to "
                                                "this path") as err:
        model_path("m")
    assert err.value.path == str(models / "m.onnx")
    with pytest.raises(ModelMissingError, match="redub models import FILE --id own"):
        model_path("own")


# --- the local store ------------------------------------------------------------------------

def test_import_checks_the_contract_copies_and_pins(models, use_manifest, tmp_path):
    use_manifest(restorer_entry("m", []))
    source = write(tmp_path / "mine.onnx", offset_model())
    path = import_model(source, "m")
    assert path == models / "m.onnx" and path.read_bytes() == source.read_bytes()
    assert store.read_pins(models)["m.onnx"]["source"] == "import"
    assert model_path("m") == path
    with pytest.raises(RedubError, match="input 'input' has shape \\(1,3,8\\), expected "
                                         "\\(1,3,S,S\\)"):
        import_model(write(tmp_path / "flat.onnx", offset_model(shape=(1, 3, 8))), "m")
    assert path.read_bytes() == source.read_bytes()  # the installed model is untouched


def test_a_pinned_file_is_not_hashed_again(models, use_manifest, tmp_path, monkeypatch):
    data = offset_model()
    use_manifest(restorer_entry("m", [], sha256=sha(data)))
    models.mkdir()
    write(models / "m.onnx", data)  # copied in by hand
    hashed = []
    real = store.digest_file
    monkeypatch.setattr(store, "digest_file", lambda p: hashed.append(p) or real(p))
    assert model_state(manifest.get_entry("m")) == "unverified"
    for _ in range(3):
        assert model_path("m") == models / "m.onnx"
    assert len(hashed) == 1


def test_a_changed_file_is_checked_again(models, use_manifest, tmp_path):
    use_manifest(restorer_entry("m", []))
    path = import_model(write(tmp_path / "m.onnx", offset_model()), "m")
    path.write_bytes(b"\x00garbage")
    assert model_state(manifest.get_entry("m")) == "changed"
    with pytest.raises(RedubError, match="not a valid ONNX model") as err:
        model_path("m")
    assert str(path) in str(err.value)


def test_a_file_with_a_wrong_checksum_is_refused(models, use_manifest):
    use_manifest(restorer_entry("m", [], sha256="1" * 64))
    models.mkdir()
    write(models / "m.onnx", offset_model())
    with pytest.raises(RedubError, match="is damaged or not model 'm'"):
        model_path("m")


def test_models_dir_prefers_the_setting_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REDUB_MODELS_DIR", str(tmp_path / "env"))
    assert store.models_dir() == tmp_path / "env"
    assert store.models_dir(tmp_path / "setting") == tmp_path / "setting"
    monkeypatch.delenv("REDUB_MODELS_DIR")
    monkeypatch.setenv("REDUB_DATA_DIR", str(tmp_path / "data"))
    assert store.models_dir() == tmp_path / "data" / "models"


# --- sessions -------------------------------------------------------------------------------

def test_corrupt_model_file_gives_a_clear_error(tmp_path):
    bad = write(tmp_path / "broken.onnx", b"this is not a model")
    with pytest.raises(RedubError) as err:
        session_for(bad, "restorer model")
    assert str(err.value).startswith(f"{bad}: cannot load restorer model: not a valid ONNX "
                                     "model (INVALID_PROTOBUF")
    truncated = write(tmp_path / "cut.onnx", offset_model(bias_size=1000)[:-500])
    with pytest.raises(RedubError, match="cannot load restorer model"):
        session_for(truncated, "restorer model")


def test_contract_mismatches_are_named(tmp_path):
    model = session_for(write(tmp_path / "m.onnx", offset_model(shape=(1, 1, 80, 15))), "m")
    mel = Contract(inputs=(TensorSpec("input", ("B", 1, 80, 16)),),
                   outputs=(TensorSpec(None, ("B", 1, 80, 16)),))
    with pytest.raises(RedubError, match=r"input 'input' has shape \(1,1,80,15\), expected "
                                         r"\(B,1,80,16\)$"):
        check_contract(model, mel, tmp_path / "m.onnx")
    square = session_for(write(tmp_path / "sq.onnx", offset_model(shape=(1, 3, 8, 8))), "sq")
    other_size = Contract(inputs=(TensorSpec("input", (1, 3, "S", "S")),),
                          outputs=(TensorSpec(None, (1, 3, "T", "S")),))
    check_contract(square, other_size, "sq.onnx")  # T is free, S is 8 throughout
    rect = Contract(inputs=(TensorSpec("input", (1, 3, "S", "S")),),
                    outputs=(TensorSpec("output", (1, "S", "S", 8)),))
    with pytest.raises(RedubError, match=r"output 'output' has shape \(1,3,8,8\), expected "
                                         r"\(1,S,S,8\) with S=8 as in input 'input'"):
        check_contract(square, rect, "sq.onnx")
    wrong_type = Contract(inputs=(TensorSpec("input", (1, 3, 8, 8), "int64"),), outputs=())
    with pytest.raises(RedubError, match="input 'input' is float32, expected int64"):
        check_contract(square, wrong_type, "sq.onnx")
    two_inputs = Contract(inputs=(TensorSpec("input", (1, 3, 8, 8)),
                                  TensorSpec("weight", (1,), "float64")), outputs=())
    with pytest.raises(RedubError, match="the model has 1 inputs \\('input'\\), expected 2"):
        check_contract(square, two_inputs, "sq.onnx")


def test_provider_order_and_options(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: [
        "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider",
        "AzureExecutionProvider"])
    chosen = providers()
    assert [name for name, _ in chosen] == ["TensorrtExecutionProvider",
                                            "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt, cuda = chosen[0][1], chosen[1][1]
    assert trt["trt_engine_cache_enable"] and trt["trt_fp16_enable"]
    assert trt["trt_engine_cache_path"] == os.path.join(os.environ["REDUB_CACHE_DIR"], "trt")
    assert cuda == {"cudnn_conv_algo_search": "EXHAUSTIVE"}
    assert [n for n, _ in providers(["cpu", "cuda"])] == ["CPUExecutionProvider",
                                                          "CUDAExecutionProvider"]
    monkeypatch.setattr(session, "_warned", set())
    with pytest.warns(RuntimeWarning, match="DmlExecutionProvider was asked for"):
        assert [n for n, _ in providers(["directml"])] == ["CPUExecutionProvider"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        providers(["directml"])  # once per process
    with pytest.raises(UsageError, match="unknown execution provider 'tpu'"):
        providers(["tpu"])


@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")  # onnxruntime's own
def test_gpu_that_cannot_start_falls_back_to_the_cpu_with_one_warning(tmp_path, monkeypatch):
    import onnxruntime as ort

    # The build claims CUDA but cannot run it here: the session lands on the CPU.
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(session, "_warned", set())
    with pytest.warns(RuntimeWarning, match="CUDAExecutionProvider is installed but could not "
                                            "start"):
        first = session_for(write(tmp_path / "a.onnx", offset_model()), "a")
    assert first.providers == ["CPUExecutionProvider"] and "CPU" in first.fallback
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        second = session_for(write(tmp_path / "b.onnx", offset_model(offset=2)), "b")
    assert second.fallback == first.fallback


def test_sessions_are_cached_per_file_and_providers(tmp_path):
    path = write(tmp_path / "m.onnx", offset_model())
    first = session_for(path, "m")
    assert session_for(path, "m") is first and session_for(str(path), "m") is first
    assert first.session.get_session_options().intra_op_num_threads == \
        session.physical_cores()
    write(path, offset_model(offset=3.0))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    replaced = session_for(path, "m")
    assert replaced is not first
    out = replaced.run({"input": np.zeros((1, 3, 8, 8), np.float32)})[0]
    assert np.allclose(out, 3.0)
    session.clear_sessions()
    assert session_for(path, "m") is not replaced


def test_fp16_models_take_and_give_float32(tmp_path):
    path = write(tmp_path / "half.onnx", offset_model(dtype="float16", offset=0.25))
    model = session_for(path, "half")
    check_contract(model, Contract(inputs=(TensorSpec("input", (1, 3, "S", "S")),),
                                   outputs=(TensorSpec(None, (1, 3, "S", "S")),)), path)
    x = np.linspace(-1, 1, 192, dtype=np.float32).reshape(1, 3, 8, 8)
    out = model.run({"input": x})[0]
    assert out.dtype == np.float32 and np.allclose(out, x + 0.25, atol=1e-3)


def test_run_casts_inputs_and_names_bad_ones(tmp_path):
    path = write(tmp_path / "cf.onnx", weighted_model())
    model = session_for(path, "codeformer")
    out = model.run({"input": np.ones((1, 3, 8, 8)), "weight": np.array([0.5], np.float32)})[0]
    assert out.dtype == np.float32 and np.allclose(out, 0.5)
    with pytest.raises(RedubError, match="codeformer: inputs \\['input'\\] do not match"):
        model.run({"input": np.ones((1, 3, 8, 8))})
    with pytest.raises(RedubError, match="codeformer failed: INVALID_ARGUMENT"):
        model.run({"input": np.ones((1, 3, 4, 4)), "weight": np.array([0.5])})


def test_run_batched_splits_by_the_models_batch(tmp_path):
    x = np.arange(5 * 3 * 8 * 8, dtype=np.float32).reshape(5, 3, 8, 8)
    free = session_for(write(tmp_path / "free.onnx", offset_model(fixed_batch=False)), "free")
    one = session_for(write(tmp_path / "one.onnx", offset_model()), "one")
    for model in (free, one):
        out = model.run_batched({"input": x}, batch=2)[0]
        assert out.shape == x.shape and np.allclose(out, x + 0.5)


# --- the command ----------------------------------------------------------------------------

def test_cli_list_download_verify_import(models, use_manifest, server, tmp_path, capsys):
    server.files["m.onnx"] = BIG
    own = offset_model(offset=1.0)
    use_manifest(restorer_entry("m", [server.url("m.onnx")], sha256=sha(BIG)),
                 restorer_entry("own", []))
    assert cli.main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "m    restorer  ?     missing" in out and f"folder: {models}" in out

    assert cli.main(["models", "download", "m"]) == 0
    assert capsys.readouterr().out.strip() == str(models / "m.onnx")
    assert cli.main(["models", "import", str(write(tmp_path / "own.onnx", own))]) == 0
    capsys.readouterr()
    assert cli.main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "m    restorer  0.2 MB  verified" in out and "own  restorer  0.0 MB  verified" in out

    assert cli.main(["models", "verify"]) == 0
    assert capsys.readouterr().out.split() == ["m:", "ok", "own:", "ok"]
    # Damage a byte without changing the size or time: only a full verify notices.
    path = models / "own.onnx"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cli.main(["models", "verify", "own"]) == 1
    assert "own: " in capsys.readouterr().out
    assert cli.main(["models", "list"]) == 0
    assert "own  restorer  0.0 MB  unverified" in capsys.readouterr().out

    assert cli.main(["models", "import", str(write(tmp_path / "x.onnx", own))]) == 2
    assert "pass --id" in capsys.readouterr().err
    assert cli.main(["models", "verify", "nope"]) == 2
    path.unlink()
    assert cli.main(["models", "download", "own"]) == 1
    assert "redub models import FILE --id own" in capsys.readouterr().err


def test_cli_models_dir_option(use_manifest, tmp_path, capsys):
    use_manifest(restorer_entry("m", []))
    folder = tmp_path / "elsewhere"
    assert cli.main(["models", "--dir", str(folder), "import",
                     str(write(tmp_path / "a.onnx", offset_model())), "--id", "m"]) == 0
    assert capsys.readouterr().out.strip() == str(folder / "m.onnx")
    assert json.loads((folder / "pins.json").read_text())["m.onnx"]["source"] == "import"
