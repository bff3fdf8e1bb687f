"""What the model exporters share: their command line, the acceptance test that keeps an
export only when onnxruntime gives what torch gave on the same inputs, and the pipeline that
exports a set of networks (staged, checked, fp16 variants, moved into place, checksums)."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from engine.errors import RedubError


def onnx_difference(onnx_path: str | os.PathLike, inputs: dict[str, np.ndarray],
                    expected: np.ndarray, tolerance: float) -> float:
    """Largest difference between the exported model's output on ``inputs`` and ``expected``
    (torch's); raises a ``RedubError`` naming the file above ``tolerance``, or when the
    export cannot run at all."""
    import onnxruntime as ort

    path = os.fspath(onnx_path)
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = session.run(None, inputs)[0]
    except Exception as exc:  # onnxruntime's errors are untyped
        raise RedubError(f"onnxruntime cannot run the export ({exc.__class__.__name__})",
                         path) from exc
    if got.shape != expected.shape:
        raise RedubError(f"output shape {got.shape}, torch gives {expected.shape}", path)
    diff = float(np.abs(got - expected).max())
    if not diff <= tolerance:  # also catches NaN
        raise RedubError(f"parity check failed: onnxruntime differs from torch by {diff:.3g} "
                         f"(tolerance {tolerance:g})", path)
    return diff


def exporter_parser(prog: str, description: str, checkpoint_help: str,
                    default_opset: int) -> argparse.ArgumentParser:
    """``prog CHECKPOINT -o OUT.onnx [--opset N]``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("checkpoint", help=checkpoint_help)
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=default_opset,
                        help=f"ONNX opset (default {default_opset})")
    return parser


def kept_if_faithful(onnx_path: Path, check: Callable[[Path], float]) -> float:
    """``check``'s difference for the written export; a failing export is removed."""
    try:
        return check(onnx_path)
    except RedubError:
        onnx_path.unlink(missing_ok=True)
        raise


def external_data_path(onnx_path: Path) -> Path:
    """Where a large export keeps its weights: ``<file>.onnx.data`` beside it."""
    return onnx_path.with_name(f"{onnx_path.name}.data")


def state_mismatch(expected: Mapping[str, Any], got: Mapping[str, Any]) -> str | None:
    """The first way a checkpoint's tensors ``got`` differ from an architecture's state dict
    ``expected`` (a missing, unexpected or mis-shaped key, and how many more), or None."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shaped = [k for k in expected if k in got and
              tuple(getattr(got[k], "shape", ())) != tuple(expected[k].shape)]
    for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (shaped, "mis-shaped")):
        if keys:
            key = keys[0]
            detail = (f" {tuple(getattr(got[key], 'shape', ()))}, expected "
                      f"{tuple(expected[key].shape)}" if what == "mis-shaped" else "")
            more = len(missing) + len(unexpected) + len(shaped) - 1
            return (f"{what} key {key}{detail}"
                    + (f" (and {more} more differences)" if more else ""))
    return None


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Only errors from logger ``name`` (torch's exporter and diffusers chatter) meanwhile."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def read_checkpoint(path: str | os.PathLike):
    """A PyTorch checkpoint's contents, loaded with ``weights_only=True``: tensors and plain
    containers only, never code from the file."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise RedubError("checkpoint not found", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or non-tensor pickles
        first = (str(exc).splitlines() or [""])[0][:160]
        raise RedubError(f"cannot read the checkpoint ({exc.__class__.__name__}: {first})",
                         path) from exc


def save_single_file(raw: Path, out: Path, opset: int | None = None) -> None:
    """Re-save the exporter's output ``raw`` as one self-contained, checked ONNX file at
    ``out`` (atomically). Exporters write weights to a side ``.onnx.data`` file for large
    models; they are folded back in. With ``opset``, an export in another opset is refused
    (the new exporter keeps its own opset when it cannot convert)."""
    import onnx

    proto = onnx.load(raw, load_external_data=True)
    if opset is not None:
        written = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        if written != opset:
            raise RedubError(f"torch wrote opset {written} instead of {opset}: choose another "
                             "--opset", out)
    onnx.checker.check_model(proto)
    part = raw.with_name(f"{raw.stem}.single.onnx")
    onnx.save(proto, part, save_as_external_data=False)
    os.replace(part, out)


# --- the networks exporters' shared pipeline: staged export, parity, fp16, sums ---------------

OPSET = 18  # the torch.export-based exporter's oldest opset
# fp32: reordered sums differ by ~1e-6 of the output's scale per layer, ~1e-5 through these
# networks; one wrong weight or operator moves outputs by 1e-2 and more.
TOLERANCE = 1e-3
# fp16 keeps ~3 significant digits (unit roundoff 4.9e-4); through 20-70 layers its rounding
# errors add up to ~1e-2 of the output's scale (measured: see installer/README.md).
TOLERANCE_FP16 = 3e-2
# Protobuf cannot serialise a model of 2 GiB; weights above this go to a .onnx.data file.
SINGLE_FILE_LIMIT = 2_000_000_000
EXPORT_BATCH = 2  # torch.export specialises a batch of 1, so the example batch is 2
PARITY_BATCH = 3  # differs from the example batch, so the free batch dimension is exercised


@dataclass(frozen=True)
class Exported:
    """One written network: its model id, its files (the graph first, then its external
    data if any), the largest torch/onnxruntime difference and the tolerance it passed."""
    model_id: str
    files: tuple[Path, ...]
    difference: float
    tolerance: float

    @property
    def path(self) -> Path:
        return self.files[0]


@dataclass(frozen=True)
class Network:
    """A network to export: ``load()`` gives the torch module wrapped to the contract (eval
    mode); ``inputs`` maps each input name to its shape (symbolic sizes as letters: ``B`` the
    batch, others from ``sizes``) and a ``draw(rng, shape)`` of test values."""
    model_id: str
    load: Callable[[], Any]
    inputs: dict[str, tuple[tuple[int | str, ...], Callable]]
    output: str
    metadata: Mapping[str, str] = field(default_factory=dict)  # the ONNX model's metadata_props
    sizes: Mapping[str, tuple[int, int | None]] = field(default_factory=dict)  # letter: test, max


def export_networks(networks: Sequence[Network], out: Path, fp16: bool = False,
                    progress: Callable[[str, int, int], None] | None = None) -> list[Exported]:
    """Each network exported, checked and moved into ``out`` in turn. On any failure the
    files this run wrote are removed and the ``RedubError`` names the file at fault.
    ``progress(model_id, done, total)`` as each starts, and with ``done == total`` at the end."""
    out.mkdir(parents=True, exist_ok=True)
    done: list[Exported] = []
    try:
        for i, network in enumerate(networks):
            if progress:
                progress(network.model_id, i, len(networks))
            done.extend(export_network(network, out, fp16))
    except BaseException:
        for exported in done:
            for path in exported.files:
                path.unlink(missing_ok=True)
        raise
    if progress and networks:
        progress(networks[-1].model_id, len(networks), len(networks))
    return done


def export_network(network: Network, out: Path, fp16: bool = False) -> list[Exported]:
    """Export one network (and its fp16 variant), check it, then move it into ``out``."""
    import torch

    module = network.load()
    rng = np.random.default_rng(0)
    feeds = {name: draw(rng, _concrete(network, shape, PARITY_BATCH)).astype(np.float32)
             for name, (shape, draw) in network.inputs.items()}
    with torch.no_grad():
        expected = module(*(torch.from_numpy(a) for a in feeds.values())).numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    results = []
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        staged = Path(tmp) / f"{network.model_id}.onnx"
        _export_onnx(module, network, staged)
        results.append((network.model_id, _staged_files(staged),
                        _checked(staged, out, feeds, expected, TOLERANCE * scale),
                        TOLERANCE * scale))
        if fp16:
            del module  # the fp32 weights are in the file; keep one copy in memory
            half = staged.with_name(f"{network.model_id}_fp16.onnx")
            _to_fp16(staged, half)
            results.append((f"{network.model_id}_fp16", _staged_files(half),
                            _checked(half, out, feeds, expected, TOLERANCE_FP16 * scale),
                            TOLERANCE_FP16 * scale))
        exported = []
        for model_id, files, difference, tolerance in results:
            moved = tuple(out / f.name for f in files)
            for src, dst in zip(reversed(files), reversed(moved)):  # the data before its graph
                os.replace(src, dst)
            exported.append(Exported(model_id, moved, difference, tolerance))
    return exported


def _export_onnx(module, network: Network, path: Path) -> None:
    """``module`` as ONNX at ``path``: batch (and the other letters) free, weights in the file
    or, past protobuf's limit, in ``<path>.data``."""
    import torch

    dims: dict[str, Any] = {}
    example, dynamic = [], {}
    for name, (shape, draw) in network.inputs.items():
        example.append(torch.from_numpy(draw(np.random.default_rng(1), _concrete(
            network, shape, EXPORT_BATCH)).astype(np.float32)))
        dynamic[name] = {axis: dims.setdefault(letter, torch.export.Dim(
            letter, min=1, max=network.sizes.get(letter, (0, None))[1]))
            for axis, letter in enumerate(shape) if isinstance(letter, str)}
    weights = sum(t.numel() * t.element_size()
                  for t in (*module.parameters(), *module.buffers()))
    # The exporter narrates every step and warns about optional packages: keep it quiet.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings(), quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(module, tuple(example), input_names=list(network.inputs),
                                        output_names=[network.output], opset_version=OPSET,
                                        dynamo=True, dynamic_shapes=dynamic)
            _drop_provenance(program.model)
            program.model.metadata_props.update(network.metadata)
            program.save(path, external_data=weights > SINGLE_FILE_LIMIT)
        except Exception as exc:  # the exporter raises many types
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            raise RedubError(f"torch cannot export {network.model_id} "
                             f"({exc.__class__.__name__}: {first})") from exc


def _drop_provenance(model) -> None:
    """Remove what the exporter notes per node and value (Python stack traces with this
    machine's paths, FX node text): a file for a mirror should not depend on where it was
    made, and they are a third of a small network's file."""
    graph = model.graph
    values = [*graph.inputs, *graph.initializers.values()]
    for node in graph.all_nodes():
        node.metadata_props.clear()
        values.extend(node.outputs)
    for item in (graph, *values):
        item.metadata_props.clear()


def _to_fp16(src: Path, dst: Path) -> None:
    """``src`` with float16 weights and arithmetic, float32 inputs and outputs (onnxruntime's
    own converter, which leaves in float32 the operators it lacks float16 kernels for)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    # Shape inference on a path works past protobuf's 2 GiB, on a loaded model it does not.
    inferred = src.with_name(f"{src.stem}.shapes.onnx")
    onnx.shape_inference.infer_shapes_path(os.fspath(src), os.fspath(inferred))
    model = onnx.load(inferred)
    inferred.unlink()
    with quiet_logger("onnxruntime.transformers"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
        del model
        # The converter appends its input casts after their users; the ONNX checker (and
        # some runtimes) want nodes in order.
        OnnxModel.graph_topological_sort(half.graph)
    if half.ByteSize() > SINGLE_FILE_LIMIT:
        onnx.save(half, dst, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=external_data_path(dst).name)
    else:
        onnx.save(half, dst)


def _checked(path: Path, out: Path, feeds: dict[str, np.ndarray], expected: np.ndarray,
             tolerance: float) -> float:
    """The staged export's largest difference from torch; errors name the file it was to
    become in ``out`` (the staging folder is gone by the time the message is read)."""
    import onnx

    try:
        onnx.checker.check_model(os.fspath(path))  # by path: works past 2 GiB
    except Exception as exc:  # onnx.checker.ValidationError and protobuf errors
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise RedubError(f"invalid ONNX ({exc.__class__.__name__}: {first})",
                         out / path.name) from exc
    try:
        return onnx_difference(path, feeds, expected, tolerance)
    except RedubError as exc:
        raise RedubError(exc.problem, out / path.name) from exc


def _staged_files(path: Path) -> tuple[Path, ...]:
    data = external_data_path(path)
    return (path, data) if data.exists() else (path,)


def _concrete(network: Network, shape: tuple[int | str, ...], batch: int) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else batch if d == "B" else network.sizes[d][0]
                 for d in shape)


def read_state(path: Path, missing: str) -> dict:
    """A checkpoint that is a plain state dict; ``missing`` says where it was expected."""
    if not path.is_file():
        raise RedubError(f"not found ({missing})", path)
    state = read_checkpoint(path)
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and hasattr(v, "shape") for k, v in state.items()):
        raise RedubError("not a state dict (a mapping of parameter names to tensors)", path)
    return state


def load_strict(model, state: dict, path: Path, what: str) -> None:
    """``state`` into ``model`` with every key and shape matching, else one line saying the
    first difference."""
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise RedubError(f"not {what}: {problem}", path)
    model.load_state_dict(state, strict=True)


def require_modules(names: Sequence[str], extra: str) -> None:
    """One line naming the first of ``names`` that cannot be imported, and ``extra``."""
    for name in names:
        try:
            __import__(name)
        except ImportError:
            raise RedubError(f"{name} is missing: {extra}") from None


def write_sums(out: Path, files: Sequence[Path]) -> Path:
    """``out/SHA256SUMS``: one line per file, ``<sha256>  <size in bytes>  <name>``."""
    lines = []
    for path in files:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        lines.append(f"{digest.hexdigest()}  {path.stat().st_size}  {path.name}\n")
    sums = out / "SHA256SUMS"
    part = sums.with_name(".SHA256SUMS.part")
    part.write_text("".join(lines), encoding="utf-8")
    os.replace(part, sums)
    return sums


def print_report(exported: Sequence[Exported], out: Path) -> None:
    """Each written network's files, size and parity figure, then ``out/SHA256SUMS``."""
    for e in exported:
        size = sum(f.stat().st_size for f in e.files) / 1e6
        print(f"{e.model_id}: {' + '.join(f.name for f in e.files)}, {size:.1f} MB, "
              f"max |onnxruntime - torch| {e.difference:.2e} (tolerance {e.tolerance:.1e})")
    print(write_sums(out, [f for e in exported for f in e.files]))
