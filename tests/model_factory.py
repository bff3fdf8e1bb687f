"""Tiny ONNX models (built with ``onnx.helper``, no torch) and test manifests that list them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16,
          "float64": TensorProto.DOUBLE}


def offset_model(shape=(1, 3, 8, 8), dtype: str = "float32", input_name: str = "input",
                 output_name: str = "output", offset: float = 0.5, fixed_batch: bool = True,
                 bias_size: int = 0) -> bytes:
    """``output = input + offset``: a restorer-shaped model whose output is easy to predict.

    ``fixed_batch=False`` leaves the batch axis free; ``bias_size`` pads the file with an
    unused-looking constant of that many float32s (added as zero) to make it bigger.
    """
    dims = list(shape) if fixed_batch else ["B", *shape[1:]]
    elem = _TYPES[dtype]
    nodes = [helper.make_node("Add", [input_name, "offset"], [output_name if not bias_size
                                                               else "shifted"])]
    inits = [numpy_helper.from_array(np.array(offset, dtype=dtype), "offset")]
    if bias_size:
        inits.append(numpy_helper.from_array(np.zeros(bias_size, dtype=dtype), "pad"))
        nodes += [helper.make_node("ReduceSum", ["pad"], ["pad_sum"], keepdims=0),
                  helper.make_node("Add", ["shifted", "pad_sum"], [output_name])]
    graph = helper.make_graph(nodes, "offset",
                              [helper.make_tensor_value_info(input_name, elem, dims)],
                              [helper.make_tensor_value_info(output_name, elem, dims)], inits)
    return _serialise(graph)


def weighted_model(size: int = 8) -> bytes:
    """CodeFormer-shaped: ``input`` (1,3,S,S) float32 and ``weight`` (1,) float64 ->
    ``input * weight``."""
    nodes = [helper.make_node("Cast", ["weight"], ["w32"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["input", "w32"], ["output"])]
    graph = helper.make_graph(
        nodes, "weighted",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size]),
         helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, size, size])])
    return _serialise(graph)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def restorer_entry(model_id: str, urls: list[str], size: int = 8, **fields) -> dict:
    """A manifest entry (JSON form) in the ``offset_model`` contract; ``fields`` override."""
    entry = {
        "id": model_id, "stage": "restorer", "file": f"{model_id}.onnx", "urls": urls,
        "sha256": None, "hash_url": None, "size": None, "license": "test",
        "inputs": [{"name": "input", "shape": [1, 3, "S", "S"], "range": [-1, 1]}],
        "outputs": [{"name": None, "shape": [1, 3, "S", "S"], "range": [-1, 1]}],
    }
    entry.update(fields)
    return entry


def write_manifest(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"version": 1, "models": entries}), encoding="utf-8")
    return path


def _serialise(graph) -> bytes:
    # An opset every onnxruntime since 1.17 runs; IR 9 for the same reason.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()
