"""The Wav2Lip exporter: official checkpoint layout in, one ONNX file in the public contract out,
checked against torch."""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from engine.errors import RedubError  # noqa: E402
from engine.models.manifest import get_entry  # noqa: E402
from engine.models.session import check_contract, load_session  # noqa: E402
from installer.export_wav2lip import check_parity, load_checkpoint, main  # noqa: E402
from installer.wav2lip_arch import Wav2Lip  # noqa: E402


def test_architecture_matches_the_official_parameter_layout():
    state = Wav2Lip().state_dict()
    assert sum(v.numel() for k, v in state.items() if "num_batches" not in k) > 36_000_000
    # Names and shapes as in wav2lip.pth (after its "module." prefix is stripped).
    expected = {
        "face_encoder_blocks.0.0.conv_block.0.weight": (16, 6, 7, 7),
        "face_encoder_blocks.6.1.conv_block.0.weight": (512, 512, 1, 1),
        "audio_encoder.0.conv_block.1.running_mean": (32,),
        "audio_encoder.12.conv_block.0.weight": (512, 512, 1, 1),
        "face_decoder_blocks.1.0.conv_block.0.weight": (1024, 512, 3, 3),
        "face_decoder_blocks.6.0.conv_block.0.weight": (160, 64, 3, 3),
        "output_block.0.conv_block.0.weight": (32, 80, 3, 3),
        "output_block.1.weight": (3, 32, 1, 1),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected


def test_export_is_one_file_in_the_public_contract_and_agrees_with_torch(wav2lip_model):
    folder = wav2lip_model.onnx.parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [wav2lip_model.checkpoint.name, wav2lip_model.onnx.name])  # no .onnx.data beside it
    proto = onnx.load(wav2lip_model.onnx, load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert "max difference" in wav2lip_model.log
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in proto.graph.input}
    assert dims == {"source": ["B", 1, 80, 16], "target": ["B", 6, 96, 96]}
    check_contract(load_session(wav2lip_model.onnx, "test"), get_entry("wav2lip_96").contract,
                   wav2lip_model.onnx)
    model = load_checkpoint(wav2lip_model.checkpoint)
    assert check_parity(model, wav2lip_model.onnx, batch=5, seed=3) <= 1e-4


def test_tampered_export_fails_the_parity_check(wav2lip_model, tmp_path):
    proto = onnx.load(wav2lip_model.onnx)
    # Nudge one weight of the last convolution: the file still loads and runs.
    last = next(n for n in reversed(proto.graph.node) if n.op_type == "Conv")
    weights = {t.name: t for t in proto.graph.initializer}
    tensor = weights[last.input[1]]
    values = onnx.numpy_helper.to_array(tensor).copy()
    values.flat[0] += 0.05
    tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(proto, tampered)
    model = load_checkpoint(wav2lip_model.checkpoint)
    with pytest.raises(RedubError, match="parity check failed: onnxruntime differs from torch"):
        check_parity(model, tampered)


def test_wrong_checkpoints_are_refused_with_the_reason(tmp_path, capsys):
    state = {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()}
    del state["module.output_block.1.bias"]
    state["module.extra.weight"] = torch.zeros(1)
    partial = tmp_path / "partial.pth"
    torch.save({"state_dict": state}, partial)
    assert main([str(partial), "-o", str(tmp_path / "p.onnx")]) == 1
    err = capsys.readouterr().err
    assert "missing key output_block.1.bias (and 1 more differences)" in err
    assert not (tmp_path / "p.onnx").exists()

    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"x": os.getcwd}}, pickled)  # code, not tensors: refused unread
    assert main([str(pickled), "-o", str(tmp_path / "q.onnx")]) == 1
    assert "cannot read the checkpoint" in capsys.readouterr().err
