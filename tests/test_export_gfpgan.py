"""The GFPGAN exporter: where the gfpgan package does not import it says why and what to
install, and writes nothing; where it imports, a randomly initialised v1.4 checkpoint exports
and passes the parity check and the restorer's contract."""
from __future__ import annotations

import sys

import pytest

from engine.models.store import import_model
from installer.export_gfpgan import CannotRun, architecture, main, new_network


def _importable() -> bool:
    try:
        architecture()
    except CannotRun:
        return False
    return True


def test_without_the_package_it_says_why_and_what_to_install(tmp_path, monkeypatch, capsys):
    # None in sys.modules makes an import fail as on a machine without the package.
    for name in [n for n in sys.modules if n == "gfpgan" or n.startswith("gfpgan.")] + ["gfpgan"]:
        monkeypatch.setitem(sys.modules, name, None)
    checkpoint = tmp_path / "GFPGANv1.4.pth"
    checkpoint.write_bytes(b"never read")
    out = tmp_path / "gfpgan_1.4.onnx"
    assert main([str(checkpoint), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "cannot run: the gfpgan package does not import (ModuleNotFoundError: " in err
    assert "pip install" in err and "gfpgan==1.3.8" in err and "basicsr" in err
    assert not out.exists()


@pytest.mark.skipif(_importable(), reason="the gfpgan package imports here")
def test_here_it_names_the_real_import_error(tmp_path, capsys):
    checkpoint = tmp_path / "GFPGANv1.4.pth"
    checkpoint.write_bytes(b"never read")
    assert main([str(checkpoint), "-o", str(tmp_path / "g.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    with pytest.raises(CannotRun) as exc:
        architecture()
    assert err == f"export_gfpgan: cannot run: {exc.value}"
    assert not any(tmp_path.glob("*.onnx"))


@pytest.mark.skipif(not _importable(), reason="the gfpgan package does not import here")
def test_random_checkpoint_exports_with_parity(tmp_path, monkeypatch, capsys):
    import torch

    checkpoint = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": new_network().state_dict()}, checkpoint)
    out = tmp_path / "gfpgan_1.4.onnx"
    assert main([str(checkpoint), "-o", str(out)]) == 0, capsys.readouterr().err
    assert "max difference" in capsys.readouterr().out
    # One self-contained file: no side file of weights.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([checkpoint.name, out.name])
    monkeypatch.setenv("REDUB_MODELS_DIR", str(tmp_path / "models"))
    import_model(out, "gfpgan_1.4")  # the restorer's contract
