"""ONNX sessions: execution-provider choice, cached warmed-up sessions, contract checks.

Providers are tried in the order TensorRT, CUDA, DirectML, CoreML, CPU, keeping those the
installed onnxruntime build offers. When a GPU provider was asked for (or offered) but the
session ends up on the CPU, a ``RuntimeWarning`` is issued once per provider per process and
``ModelSession.fallback`` carries the same sentence, so the CLI and the desktop can show it.

On the CUDA and TensorRT providers runs go through onnxruntime's I/O binding: inputs are placed
on the GPU, outputs allocated there and copied to the host once, and ``run_on_device`` leaves
them there so the next model of a chain (MuseTalk's VAE, UNet, VAE) takes them without a round
trip through host memory. On the CPU binding gains nothing (measured: about 4 us more per
call, the same within noise on a 65 ms batch), so there ``run`` stays on the plain path.
"""
from __future__ import annotations

import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from engine.errors import RedubError, UsageError
from engine.models.manifest import Contract, TensorSpec
from engine.paths import cache_dir

if TYPE_CHECKING:
    from onnxruntime import OrtValue

CPU = "CPUExecutionProvider"
PRIORITY = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "DmlExecutionProvider",
            "CoreMLExecutionProvider", CPU)
ALIASES = {"tensorrt": PRIORITY[0], "cuda": PRIORITY[1], "directml": PRIORITY[2],
           "coreml": PRIORITY[3], "cpu": CPU}

# onnxruntime's type strings and the numpy dtype names the manifest uses.
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
               "tensor(double)": "float64", "tensor(int64)": "int64",
               "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}

ProviderSpec = tuple[str, dict[str, Any]]
# Providers whose tensors live in CUDA memory (onnxruntime's device name for them).
_CUDA_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def providers(preferred: Sequence[str] | None = None) -> list[ProviderSpec]:
    """Providers to open sessions with, best first, each with its options; CPU always last.

    ``preferred`` (full onnxruntime names or ``tensorrt``/``cuda``/``directml``/``coreml``/
    ``cpu``) replaces the default order; names this onnxruntime build lacks are skipped with a
    one-time warning.
    """
    import onnxruntime as ort  # imported on use: processes without ONNX stages never load it

    available = set(ort.get_available_providers())
    wanted = [_full_name(p) for p in preferred] if preferred else list(PRIORITY)
    chosen = []
    for name in wanted:
        if name in available:
            chosen.append(name)
        elif preferred:
            _warn_once(name, f"{name} was asked for but this onnxruntime build does not have "
                             "it; models run on the next provider available")
    if CPU not in chosen:
        chosen.append(CPU)
    return [(name, _provider_options(name)) for name in dict.fromkeys(chosen)]


_choose_providers = providers  # session_for's parameter of the same name hides the function


def physical_cores() -> int:
    """Physical CPU cores available to this process: CPU inference gains nothing from SMT twins
    and loses to the decoder and encoder threads sharing the cores."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    try:
        import psutil
        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:
        physical = usable
    return max(1, min(physical, usable))


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str | None, ...]  # None or a name: dynamic
    dtype: str


class ModelSession:
    """A loaded model: ``run`` takes and returns numpy arrays, casting to the model's types."""

    def __init__(self, session, path: Path, what: str, fallback: str | None) -> None:
        self.session = session
        self.path = path
        self.what = what
        self.fallback = fallback  # why a GPU was not used, or None
        self.providers: list[str] = session.get_providers()
        self.inputs = [_info(t) for t in session.get_inputs()]
        self.outputs = [_info(t) for t in session.get_outputs()]
        self._lock = threading.Lock()
        self._warmed = False
        # Where bound tensors live: onnxruntime's device name for the session's first provider.
        self.device = "cuda" if self.providers[0] in _CUDA_PROVIDERS else "cpu"

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the model's order; float16 outputs come back as float32."""
        if self.device != "cpu":
            return self.run_bound(inputs)
        feed = {t.name: np.ascontiguousarray(inputs[t.name], dtype=t.dtype)
                for t in self._checked(inputs)}
        try:
            out = self.session.run(None, feed)
        except Exception as exc:  # onnxruntime raises untyped errors for bad shapes and values
            raise RedubError(f"{self.what} failed: {_ort_reason(exc)}", self.path) from exc
        return [_api_dtype(o) for o in out]

    def run_bound(self, inputs: Mapping[str, np.ndarray | OrtValue]) -> list[np.ndarray]:
        """``run`` through I/O binding: inputs placed on the session's device, outputs made
        there and copied to the host once, float16 ones as float32 (``run`` on the GPU)."""
        binding = self._bound_run(inputs)
        return [_api_dtype(o) for o in binding.copy_outputs_to_cpu()]

    def run_on_device(self, inputs: Mapping[str, np.ndarray | OrtValue]) -> list[OrtValue]:
        """Outputs left on the session's device in the model's own dtypes (float16 stays
        float16), to feed another session's ``run_on_device`` or ``run_bound`` with no trip
        through host memory; ``.numpy()`` copies one to the host. Inputs may be numpy arrays
        (cast as ``run`` casts them) or such outputs."""
        return self._bound_run(inputs).get_outputs()

    def _bound_run(self, inputs: Mapping[str, np.ndarray | OrtValue]):
        from onnxruntime import OrtValue

        binding = self.session.io_binding()
        # Held until the run is over: a CPU OrtValue borrows its numpy array's memory.
        held = []
        for t in self._checked(inputs):
            value = inputs[t.name]
            if isinstance(value, OrtValue) and _ORT_DTYPES.get(value.data_type()) != t.dtype:
                value = value.numpy()  # chained models that disagree on precision meet on the host
            if not isinstance(value, OrtValue):
                value = OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value, dtype=t.dtype),
                                                     self.device)
            held.append(value)
            binding.bind_ortvalue_input(t.name, value)
        for t in self.outputs:
            binding.bind_output(t.name, self.device)
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:  # onnxruntime raises untyped errors for bad shapes and values
            raise RedubError(f"{self.what} failed: {_ort_reason(exc)}", self.path) from exc
        return binding

    def _checked(self, inputs: Mapping[str, object]) -> list[TensorInfo]:
        """The model's inputs, once ``inputs`` names exactly them."""
        names = {t.name for t in self.inputs}
        missing = [n for n in names if n not in inputs]
        unknown = [n for n in inputs if n not in names]
        if missing or unknown:
            raise RedubError(f"{self.what}: inputs {sorted(inputs)} do not match the model's "
                             f"{sorted(names)}", self.path)
        return self.inputs

    def run_batched(self, inputs: dict[str, np.ndarray], batch: int = 8) -> list[np.ndarray]:
        """``run`` over axis 0 in chunks of ``batch`` (of one where the model fixes batch 1)."""
        count = len(next(iter(inputs.values())))
        if self.inputs and self.inputs[0].shape and self.inputs[0].shape[0] == 1:
            batch = 1
        parts = [self.run({k: v[i:i + batch] for k, v in inputs.items()})
                 for i in range(0, count, batch)]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(self.outputs))]

    def warm_up(self) -> None:
        """One run on zeros, so provider set-up (cuDNN algorithm search, TensorRT engine build)
        happens at load time rather than on the first frame. Skipped for models whose inputs
        have free sizes beyond the batch axis: their first real call warms them."""
        with self._lock:
            if self._warmed:
                return
            self._warmed = True
        shapes = []
        for t in self.inputs:
            dims = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(t.shape)]
            if not all(isinstance(d, int) for d in dims):
                return
            shapes.append((t.name, dims, t.dtype))
        self.run({name: np.zeros(dims, dtype=dtype) for name, dims, dtype in shapes})


def session_for(path: str | os.PathLike, what: str,
                providers: Sequence[str] | None = None) -> ModelSession:
    """A warmed-up session for ``path``, shared per file (and its size and time) and providers."""
    chosen = _choose_providers(providers)
    file = Path(path)
    try:
        st = file.stat()
    except FileNotFoundError:
        raise RedubError(f"{what} file not found", file) from None
    key = (os.fspath(file.resolve()), st.st_size, st.st_mtime_ns, tuple(n for n, _ in chosen))
    with _cache_lock:
        cached = _sessions.get(key)
        if cached is None:
            session = _open(file, what, chosen)
            cached = ModelSession(session, file, what, _fallback_note(chosen, session))
            _sessions[key] = cached
    cached.warm_up()
    return cached


def clear_sessions() -> None:
    """Forget cached sessions (their memory is freed once no caller holds them)."""
    with _cache_lock:
        _sessions.clear()


def check_contract(session, contract: Contract, path: str | os.PathLike) -> None:
    """Raise a ``RedubError`` naming the first difference between the model and ``contract``.

    ``session`` is a ``ModelSession`` or an ``onnxruntime.InferenceSession``. Fixed sizes must
    agree where both sides fix them; a symbolic size must take one value across the model;
    a float32 tensor may be float16 in the model (half-precision exports are cast in ``run``).
    """
    ort_session = getattr(session, "session", session)
    bound: dict[str, tuple[int, str]] = {}
    for side, model, specs in (("input", ort_session.get_inputs(), contract.inputs),
                               ("output", ort_session.get_outputs(), contract.outputs)):
        problem = _side_problem(side, [_info(t) for t in model], specs, bound)
        if problem:
            raise RedubError(f"does not match the model contract: {problem}", path)


def load_session(model: str | os.PathLike, what: str, providers: list[str] | None = None):
    """An uncached ``onnxruntime.InferenceSession`` for ``model``; ``what`` names it in errors."""
    path = Path(model)
    if not path.is_file():
        raise RedubError(f"{what} file not found", path)
    return _open(path, what, [(p, {}) for p in providers or [CPU]])


_sessions: dict[tuple, ModelSession] = {}
_cache_lock = threading.Lock()
_warned: set[str] = set()


def _open(path: Path, what: str, chosen: list[ProviderSpec]):
    import onnxruntime as ort

    if not path.is_file():
        raise RedubError(f"{what} file not found", path)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = physical_cores()
    options.inter_op_num_threads = 1
    # The CPU arena keeps each run's peak for good: MuseTalk's full-size networks grew past
    # 24 GB at batch 16 with it. Without it, memory follows the batch actually running.
    options.enable_cpu_mem_arena = False
    if any(name == "DmlExecutionProvider" for name, _ in chosen):
        # DirectML cannot run with memory patterns or parallel execution.
        options.enable_mem_pattern = False
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(os.fspath(path), options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise RedubError(f"cannot load {what}: {_ort_reason(exc)}", path) from exc


def _provider_options(name: str) -> dict[str, Any]:
    if name == "TensorrtExecutionProvider":
        # Building a TensorRT engine takes minutes; the cache makes it a one-time cost.
        engines = cache_dir() / "trt"
        engines.mkdir(parents=True, exist_ok=True)
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": os.fspath(engines),
                "trt_timing_cache_enable": True, "trt_fp16_enable": True}
    if name == "CUDAExecutionProvider":
        return {"cudnn_conv_algo_search": "EXHAUSTIVE"}
    return {}


def _full_name(name: str) -> str:
    full = ALIASES.get(name.lower(), name)
    if full not in PRIORITY:
        raise UsageError(f"unknown execution provider '{name}' "
                         f"(known: {', '.join(ALIASES)} or onnxruntime's full names)")
    return full


def _fallback_note(chosen: list[ProviderSpec], session) -> str | None:
    gpus = [name for name, _ in chosen if name != CPU]
    if not gpus or session.get_providers()[0] != CPU:
        return None
    note = (f"{gpus[0]} is installed but could not start (driver or CUDA/cuDNN libraries "
            "missing?); models run on the CPU")
    _warn_once(gpus[0], note)
    return note


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _api_dtype(array: np.ndarray) -> np.ndarray:
    # Half-precision models meet the rest of the engine in float32.
    return array.astype(np.float32) if array.dtype == np.float16 else array


def _info(node) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) else None)
                  for d in (node.shape or ()))
    return TensorInfo(node.name, shape, _ORT_DTYPES.get(node.type, node.type))


def _side_problem(side: str, model: list[TensorInfo], specs: Sequence[TensorSpec],
                  bound: dict[str, tuple[int, str]]) -> str | None:
    if len(model) != len(specs):
        return (f"the model has {len(model)} {side}s ({_names(model)}), "
                f"expected {len(specs)} ({_names(specs)})")
    by_name = {t.name: t for t in model}
    for index, spec in enumerate(specs):
        tensor = model[index] if spec.name is None else by_name.get(spec.name)
        if tensor is None:
            return f"the model has no {side} '{spec.name}' (its {side}s: {_names(model)})"
        label = f"{side} '{tensor.name}'"
        if not _dtype_fits(tensor.dtype, spec.dtype):
            return f"{label} is {tensor.dtype}, expected {spec.dtype}"
        problem = _shape_problem(label, tensor.shape, spec.shape, bound)
        if problem:
            return problem
    return None


def _shape_problem(label: str, shape: tuple, expected: tuple,
                   bound: dict[str, tuple[int, str]]) -> str | None:
    text = f"{label} has shape {_shape_text(shape)}, expected {_shape_text(expected)}"
    if len(shape) != len(expected):
        return text
    for dim, want in zip(shape, expected):
        if not isinstance(dim, int):
            continue  # the model leaves this size free: anything the contract asks for fits
        if isinstance(want, int):
            if dim != want:
                return text
        elif want in bound and bound[want][0] != dim:
            value, where = bound[want]
            return f"{text} with {want}={value} as in {where}"
        else:
            bound.setdefault(want, (dim, label))
    return None


def _dtype_fits(actual: str, expected: str) -> bool:
    return actual == expected or (expected == "float32" and actual == "float16")


def _shape_text(shape: tuple) -> str:
    return "(" + ",".join("?" if d is None else str(d) for d in shape) + ")"


def _names(tensors) -> str:
    return ", ".join(f"'{t.name}'" if t.name else "(any name)" for t in tensors) or "none"


def _ort_reason(exc: Exception) -> str:
    """onnxruntime's message cut to one line: its status code and the first clause."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    text = text.removeprefix("Error in execution: ")  # run_with_iobinding's own wrapping
    match = re.match(r"\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*(\w+)\s*:\s*(.*)", text)
    if not match:
        return text[:200]
    code, detail = match.groups()
    if code in ("INVALID_PROTOBUF", "INVALID_GRAPH", "NO_MODEL"):
        return f"not a valid ONNX model ({code}: {_after_failed(detail)})"
    return f"{code}: {_after_failed(detail)}"[:200]


def _after_failed(detail: str) -> str:
    # "Load model from /x.onnx failed:Protobuf parsing failed." names the path twice otherwise.
    return detail.split("failed:", 1)[-1].strip() if "failed:" in detail else detail.strip()
