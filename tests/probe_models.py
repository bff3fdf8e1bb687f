"""Tiny ONNX models in the generator and stabilizer contracts, whose outputs are known.

They show what a backend feeds a model (channel order, masking, value range) and what it does
with the answer, without the cost of a real network.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def wav2lip_probe(path: Path, first_channel: int) -> Path:
    """A model in the ``wav2lip_96`` contract returning three of the six face channels:
    0 gives back the masked crop, 3 the reference. The mel input is read (times zero)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.array(v, np.int64), name) for name, v in
              (("starts", [first_channel]), ("ends", [first_channel + 3]), ("axes", [1]))]
    consts.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    nodes = [
        helper.make_node("Slice", ["target", "starts", "ends", "axes"], ["picked"]),
        helper.make_node("ReduceMean", ["source"], ["level"], keepdims=1),
        helper.make_node("Mul", ["level", "zero"], ["nothing"]),
        helper.make_node("Add", ["picked", "nothing"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "wav2lip_probe",
        [helper.make_tensor_value_info("source", TensorProto.FLOAT, ["B", 1, 80, 16]),
         helper.make_tensor_value_info("target", TensorProto.FLOAT, ["B", 6, 96, 96])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", 3, 96, 96])], consts)
    return _save(onnx, graph, path)


def inverting_neutralizer(path: Path) -> Path:
    """A model in the ``expression_neutralizer`` contract: 1 - face (a negative)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Sub", ["one", "face"], ["neutral"])], "neutralizer_probe",
        [helper.make_tensor_value_info("face", TensorProto.FLOAT, ["B", 3, 256, 256])],
        [helper.make_tensor_value_info("neutral", TensorProto.FLOAT, ["B", 3, 256, 256])],
        [numpy_helper.from_array(np.ones((), np.float32), "one")])
    return _save(onnx, graph, path)


def _save(onnx, graph, path: Path) -> Path:
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    model.ir_version = 8  # readable by every onnxruntime the project accepts
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
