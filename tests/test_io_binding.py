"""The model sessions' I/O-bound path: what the CUDA and TensorRT providers run, exercised here
on the CPU provider, where ``run`` itself stays on onnxruntime's plain ``run``.

The ``gpu`` test runs where onnxruntime has a CUDA provider that starts, and skips here.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.errors import RedubError
from engine.models.session import ModelSession, session_for
from tests.model_factory import _serialise, offset_model, write

needs_cuda = pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                                reason="needs onnxruntime's CUDA provider")


def conv_model(dtype: str = "float32", channels: tuple[int, ...] = (6, 16, 3)) -> bytes:
    """Two 3x3 convolutions with ReLU between, batch free: (B,6,S,S) -> (B,3,S,S)."""
    rng = np.random.default_rng(7)
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.FLOAT16
    nodes, inits = [], []
    for i, (cin, cout) in enumerate(zip(channels, channels[1:])):
        w = (rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(dtype)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == len(channels) - 2 else f"c{i}"
        nodes.append(helper.make_node("Conv", ["x" if i == 0 else f"r{i - 1}", f"w{i}"],
                                      [out], pads=[1, 1, 1, 1]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", elem, ["B", channels[0], "S", "S"])],
        [helper.make_tensor_value_info("y", elem, ["B", channels[-1], "S", "S"])], inits)
    return _serialise(graph)


@pytest.fixture
def x():
    return np.random.default_rng(3).standard_normal((4, 6, 24, 24)).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_bound_outputs_equal_plain_run_exactly(tmp_path, x, dtype):
    model = session_for(write(tmp_path / f"conv_{dtype}.onnx", conv_model(dtype)), "conv")
    assert model.device == "cpu" and model.inputs[0].dtype == dtype
    plain = model.session.run(None, {"x": x.astype(dtype)})[0]
    bound = model.run_bound({"x": x})[0]
    # fp16 models take and give float32 at the API, on the bound path as on run's.
    assert bound.dtype == np.float32 and plain.dtype == np.dtype(dtype)
    assert np.array_equal(bound, plain.astype(np.float32))
    assert np.array_equal(bound, model.run({"x": x})[0])
    assert np.abs(bound).max() > 0.1  # the convolutions did something


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_outputs_kept_on_the_device_are_in_the_models_dtype(tmp_path, x, dtype):
    model = session_for(write(tmp_path / f"conv_{dtype}.onnx", conv_model(dtype)), "conv")
    [out] = model.run_on_device({"x": x})
    assert isinstance(out, ort.OrtValue) and out.device_name().lower() == "cpu"
    assert out.shape() == [4, 3, 24, 24] and out.numpy().dtype == np.dtype(dtype)
    assert np.array_equal(out.numpy().astype(np.float32), model.run({"x": x})[0])


@pytest.mark.parametrize("first,second", [("float32", "float32"), ("float16", "float16"),
                                          ("float32", "float16")])
def test_chained_sessions_on_the_device_equal_the_numpy_path(tmp_path, x, first, second):
    a = session_for(write(tmp_path / f"a_{first}.onnx", conv_model(first)), "a")
    b = session_for(write(tmp_path / f"b_{second}.onnx",
                          conv_model(second, channels=(3, 8, 6))), "b")
    through_numpy = b.run({"x": a.run({"x": x})[0]})[0]
    [kept] = a.run_on_device({"x": x})
    assert np.array_equal(b.run_bound({"x": kept})[0], through_numpy)
    [chained] = b.run_on_device({"x": kept})
    assert np.array_equal(chained.numpy().astype(np.float32), through_numpy)


def test_bound_path_names_bad_inputs_as_run_does(tmp_path, x):
    model = session_for(write(tmp_path / "conv.onnx", conv_model()), "conv")
    with pytest.raises(RedubError, match=r"conv: inputs \['y'\] do not match the model's \['x'\]"):
        model.run_on_device({"y": x})
    with pytest.raises(RedubError, match=r"conv failed: Got invalid dimensions for input: x "
                                         r"for the following indices$"):
        model.run_bound({"x": x[:, :5]})


def test_run_batched_is_unchanged_on_the_cpu(tmp_path):
    x = np.arange(5 * 3 * 8 * 8, dtype=np.float32).reshape(5, 3, 8, 8)
    model = session_for(write(tmp_path / "free.onnx", offset_model(fixed_batch=False)), "free")
    assert np.array_equal(model.run_batched({"input": x}, batch=2)[0], x + 0.5)


class _FakeSession:
    """What ModelSession reads from an onnxruntime session, for a provider not installed here."""

    def __init__(self, providers: list[str]) -> None:
        self._providers = providers

    def get_providers(self) -> list[str]:
        return self._providers

    def get_inputs(self) -> list:
        return []

    def get_outputs(self) -> list:
        return []


@pytest.mark.parametrize("provider,device", [
    ("TensorrtExecutionProvider", "cuda"), ("CUDAExecutionProvider", "cuda"),
    ("DmlExecutionProvider", "cpu"), ("CoreMLExecutionProvider", "cpu"),
    ("CPUExecutionProvider", "cpu")])
def test_tensors_are_bound_on_the_first_providers_device(provider, device):
    model = ModelSession(_FakeSession([provider, "CPUExecutionProvider"]), None, "m", None)
    assert model.device == device


def test_run_goes_through_the_binding_on_a_gpu_device(tmp_path, x, monkeypatch):
    model = ModelSession(ort.InferenceSession(str(write(tmp_path / "c.onnx", conv_model()))),
                         tmp_path / "c.onnx", "conv", None)
    calls = []

    def bound(inputs):
        calls.append(inputs["x"])
        return [np.full((len(inputs["x"]), 1), 7.0, np.float32)]

    monkeypatch.setattr(model, "run_bound", bound)
    assert model.run({"x": x})[0].shape == (4, 3, 24, 24) and calls == []  # CPU: plain run
    model.device = "cuda"
    assert model.run({"x": x})[0].tolist() == [[7.0]] * 4 and calls[0] is x
    # run_batched runs each chunk through run, so through the binding too.
    assert model.run_batched({"x": x}, batch=3)[0].shape == (4, 1)
    assert [len(c) for c in calls[1:]] == [3, 1]


@needs_cuda
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cuda_keeps_chained_outputs_on_the_gpu(tmp_path, x):
    a = session_for(write(tmp_path / "a.onnx", conv_model("float16")), "a", ["cuda"])
    b = session_for(write(tmp_path / "b.onnx", conv_model("float16", channels=(3, 8, 6))), "b",
                    ["cuda"])
    if a.device != "cuda":
        pytest.skip(a.fallback or "the CUDA provider did not start")
    [kept] = a.run_on_device({"x": x})
    assert kept.device_name().lower() == "cuda"
    on_gpu = b.run_bound({"x": kept})[0]
    cpu_a = session_for(tmp_path / "a.onnx", "a", ["cpu"])
    cpu_b = session_for(tmp_path / "b.onnx", "b", ["cpu"])
    reference = cpu_b.run({"x": cpu_a.run({"x": x})[0]})[0]
    assert on_gpu.dtype == np.float32
    assert np.allclose(on_gpu, reference, atol=0.05 * np.abs(reference).max())
