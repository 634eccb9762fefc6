"""ONNX export: ONNX Runtime gives PyTorch's probabilities; class names in the metadata."""
import json

import numpy as np
import pytest
import torch

from leukolearn.cli import main
from leukolearn.model.onnx import export_onnx, onnx_difference, onnx_metadata
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.model.weights import save_model

ort = pytest.importorskip("onnxruntime")


@pytest.mark.slow
def test_onnx_runtime_matches_pytorch(tmp_path):
    model = build_model(ModelConfig(input_size=190, n_classes=3, class_names=("a", "b", "blast")),
                        init="torch", seed=0)
    path = export_onnx(model, tmp_path / "m.onnx")
    assert model.training  # export leaves the model as it found it
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch axis is dynamic
        x = torch.rand(batch, 3, 190, 190, generator=torch.Generator().manual_seed(batch))
        expected = torch.softmax(model.eval()(x), dim=1).detach().numpy()
        (got,) = session.run(["probabilities"], {"image": x.numpy()})
        assert got.shape == (batch, 3)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    meta = onnx_metadata(path)
    assert json.loads(meta["class_names"]) == ["a", "b", "blast"]
    assert meta["input_size"] == "190" and "threshold" not in meta
    model.train()
    assert onnx_difference(model, path) < 1e-5 and model.training  # export's own check


def test_export_refuses_a_file_that_does_not_match(tmp_path, capsys, monkeypatch):
    model = build_model(ModelConfig(input_size=190), seed=1)
    save_model(model, tmp_path / "model.safetensors")
    monkeypatch.setattr("leukolearn.model.onnx.onnx_difference", lambda *a, **k: 0.01)
    with pytest.raises(SystemExit) as exit_code:
        main(["export", str(tmp_path / "model.safetensors"), "--onnx", str(tmp_path / "out.onnx")])
    assert exit_code.value.code == 2
    assert "differ from PyTorch's by 1.0e-02" in capsys.readouterr().err
    assert not (tmp_path / "out.onnx").exists()


def test_export_command_writes_a_model_file(tmp_path, capsys):
    model = build_model(ModelConfig(input_size=190, extra={"threshold": 0.3}), seed=1)
    save_model(model, tmp_path / "model" / "model.safetensors")
    main(["export", str(tmp_path / "model"), "--onnx", str(tmp_path / "out.onnx")])
    out = capsys.readouterr().out
    assert "other, blast" in out and "checked: ONNX Runtime matches PyTorch within" in out
    meta = onnx_metadata(tmp_path / "out.onnx")
    assert json.loads(meta["class_names"]) == ["other", "blast"] and meta["threshold"] == "0.3"
