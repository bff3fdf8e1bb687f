"""Video ReTalking's exporter (installer/export_retalking.py) on tiny random checkpoints in the
release's formats, the models it writes, and the backend they drive from the command line."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxscript")

import onnx  # noqa: E402
import torch  # noqa: E402
from onnx import helper  # noqa: E402
from scipy.io import loadmat  # noqa: E402

import installer.export_retalking as er  # noqa: E402
from engine.cli import main  # noqa: E402
from engine.errors import RedubError  # noqa: E402
from engine.face.face3d import deep3d_points  # noqa: E402
from engine.models.manifest import get_entry  # noqa: E402
from engine.models.store import check_file_contract, import_model  # noqa: E402
from tests.conftest import shared_clip  # noqa: E402
from tests.face_clip import write_face_clip  # noqa: E402
from tests.generator_harness import edited_frames_change_only_in_mask  # noqa: E402
from tests.model_server import server  # noqa: E402,F401  (a fixture)
from tests.retalking_factory import (MODELS, retalking_onnx, template_3d,  # noqa: E402,F401
                                     write_official_checkpoints)


def test_the_release_exports_every_network_in_its_contract(retalking_onnx):
    assert sorted(retalking_onnx) == sorted(MODELS)
    for model_id, path in retalking_onnx.items():
        check_file_contract(get_entry(model_id), path)
    checkpoints = retalking_onnx["retalking_dnet"].parent.parent / "checkpoints"
    templates = loadmat(checkpoints / "expression.mat")
    meta = {p.key: p.value for p in onnx.load(retalking_onnx["retalking_dnet"]).metadata_props}
    for key in er.EXPRESSIONS:
        np.testing.assert_allclose(json.loads(meta[key]), templates[key].ravel())
    meta = {p.key: p.value for p in onnx.load(retalking_onnx["retalking_face3d"]).metadata_props}
    np.testing.assert_allclose(json.loads(meta["lm3d_std"]), deep3d_points(template_3d()))


def test_enet_takes_lnet_from_lnet_pth_not_enets_own_copy(tmp_path):
    from installer.lnet_arch import LNet, RetalkingENet, checkpoint_state

    folder = write_official_checkpoints(tmp_path / "release")
    model = er.load_enet(folder)
    lnet = checkpoint_state(torch.load(folder / "LNet.pth", weights_only=True), "LNet.pth")
    for key, value in model.low_res.state_dict().items():
        if key in lnet:  # spectral norms are folded: their weight_orig became weight
            torch.testing.assert_close(value, lnet[key], rtol=0, atol=0)
    assert isinstance(model, RetalkingENet) and isinstance(model.low_res, LNet)


def test_missing_or_foreign_release_files_are_one_line_and_leave_nothing(tmp_path):
    release = write_official_checkpoints(tmp_path / "release")
    out = tmp_path / "out"

    def fails(folder, match):
        with pytest.raises(RedubError, match=match) as err:
            er.export(folder, out)
        assert "\n" not in str(err.value)
        assert not out.exists() or not any(out.iterdir())

    broken = shutil.copytree(release, tmp_path / "no-bfm")
    (broken / "BFM.zip").unlink()
    fails(broken, r"BFM\.zip: not found")
    broken = shutil.copytree(release, tmp_path / "other-key")
    torch.save({"net_G": {"w": torch.zeros(1)}}, broken / "DNet.pt")
    fails(broken, r"DNet\.pt: no state dict under 'net_G_ema'")
    broken = shutil.copytree(release, tmp_path / "short")
    state = torch.load(broken / "face3d_pretrain_epoch_20.pth", weights_only=True)
    state["net_recon"].pop("final_layers.6.bias")
    torch.save(state, broken / "face3d_pretrain_epoch_20.pth")
    fails(broken, r"face3d_pretrain_epoch_20\.pth: not Deep3DFaceRecon's .*missing key "
                  r"final_layers\.6\.bias")
    broken = shutil.copytree(release, tmp_path / "no-template")
    (broken / "expression.mat").write_bytes(b"not a MATLAB file")
    fails(broken, r"expression\.mat: cannot read the expression templates")


def _identity_restorer(path):
    """GPEN / GFPGAN stand-in in their contract: the picture as it came."""
    spec = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 3, 512, 512])
            for n in ("input", "output")]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "same",
                              spec[:1], spec[1:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_redub_sync_runs_retalking_with_dnet_end_to_end(retalking_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("REDUB_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("REDUB_CACHE_DIR", str(tmp_path / "cache"))
    for model_id, path in retalking_onnx.items():
        import_model(path, model_id)
    for model_id in ("gpen_bfr_512", "gfpgan_1.4"):
        import_model(_identity_restorer(tmp_path / f"{model_id}.onnx"), model_id)
    clip = write_face_clip(tmp_path / "face.mp4", frames=16)
    out = tmp_path / "synced.mkv"
    span = (0.2, 0.5)
    assert main(["sync", str(clip), "--audio", str(shared_clip("speech_radio31_16k.wav")),
                 "--backend", "retalking", "--stabilizer", "dnet", "--restore", "gfpgan",
                 "--range", f"{span[0]}-{span[1]}", "--codec", "ffv1", "-o", str(out)]) == 0
    # Every frame of the range is redrawn by the random networks, inside the mask only.
    changed = edited_frames_change_only_in_mask(clip, out, span)
    assert changed == list(range(5, 13))


def test_the_shipped_manifest_names_the_release_and_its_products():
    from engine.models.manifest import backends, checkpoint_sets

    release = checkpoint_sets()["retalking"]
    assert set(release.files) == {er.DNET, er.LNET, er.ENET, er.FACE3D,
                                               er.EXPRESSION, er.BFM, er.PARSENET}
    assert all(f.urls == (f"https://github.com/vinthony/video-retalking/releases/download/"
                          f"v0.0.1/{f.path}",) for f in release.files.values())
    assert release.converter == "installer.export_retalking:convert"
    for model_id in MODELS:
        entry = get_entry(model_id)
        assert entry.convert.checkpoints == "retalking" and entry.license and not entry.urls
    assert backends("stabilizer")["dnet"] == "engine.stabilize.dnet:DNetStabilizer"
    assert backends("generator")["retalking"] == "engine.lipsync.retalking:RetalkingGenerator"
    # The restorer the original finishes with: GFPGAN v1.3, as FaceFusion publishes it.
    assert get_entry("gfpgan_1.3").urls[0].endswith("/models-3.0.0/gfpgan_1.3.onnx")


def test_retalking_is_downloaded_as_the_release_and_converted(tmp_path, monkeypatch, server):
    from engine.models import download, mirror
    from engine.models.download import install_models
    from engine.models.store import model_state
    from tests.test_models_musetalk import serve_checkpoints

    models = tmp_path / "models"
    monkeypatch.setenv("REDUB_MODELS_DIR", str(models))
    monkeypatch.delenv(mirror.ENV, raising=False)
    monkeypatch.setattr(download, "CHUNK", 1 << 16)
    release = write_official_checkpoints(tmp_path / "upstream")
    serve_checkpoints(server, tmp_path, monkeypatch, release, "retalking")
    seen = []
    wanted = ["retalking_face3d", "retalking_dnet"]  # the dnet stabilizer's models
    paths = install_models(wanted, progress=lambda *report: seen.append(report))
    assert paths == [models / f"{m}.onnx" for m in wanted]
    # The whole release is fetched once and converted in one run: ENet and ParseNet too.
    assert sorted(r[0] for r in server.requests) == sorted(
        f"hf/{p.name}" for p in release.iterdir())
    assert {s for s, _, _ in seen if s.startswith("convert ")} >= {
        f"convert {m}" for m in MODELS}
    for model_id in MODELS:
        assert model_state(get_entry(model_id)) == "verified"
