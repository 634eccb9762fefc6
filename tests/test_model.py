import numpy as np
import pytest
import torch

from leukolearn.errors import BadFileError, LeukolearnError
from leukolearn.model.cnn import ModelConfig, build_model, count_parameters, min_input_size
from leukolearn.model.weights import load_model, save_model


@pytest.mark.parametrize("n_classes, expected", [(2, 7210), (6, 7342)])
def test_parameter_counts_match_the_paper(n_classes, expected):
    config = ModelConfig(input_size=257, n_classes=n_classes,
                         class_names=[f"c{i}" for i in range(n_classes)])
    assert count_parameters(build_model(config)) == expected


def test_model_is_sized_from_its_input():
    # 400 px (AML): last feature map 4x4 instead of 2x2, so the dense layer grows.
    model = build_model(ModelConfig(input_size=400))
    assert count_parameters(model) == 7210 - 64 * 32 + 256 * 32
    assert model(torch.rand(1, 3, 400, 400)).shape == (1, 2)
    assert model.embed(torch.rand(3, 3, 400, 400)).shape == (3, 32)


def test_too_small_input_is_refused():
    with pytest.raises(LeukolearnError, match="too small"):
        ModelConfig(input_size=min_input_size(6) - 1)


def test_keras_init_has_zero_biases_and_glorot_range():
    model = build_model(ModelConfig(), init="keras", seed=0)
    conv = model.features[0]
    assert torch.all(conv.bias == 0)
    fan_in, fan_out = 3 * 9, 4 * 9
    limit = (6 / (fan_in + fan_out)) ** 0.5
    assert conv.weight.abs().max() <= limit
    torch_model = build_model(ModelConfig(), init="torch", seed=0)
    assert torch.any(torch_model.features[0].bias != 0)


def test_save_load_round_trip_keeps_config_and_outputs(tmp_path):
    config = ModelConfig(n_classes=3, class_names=("a", "b", "c"))
    model = build_model(config, seed=1).eval()
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert loaded.config.class_names == ("a", "b", "c")
    x = torch.rand(2, 3, 257, 257)
    assert torch.allclose(model(x), loaded(x))


def test_load_refuses_bad_files_by_name(tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    save_model(build_model(ModelConfig()), truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(BadFileError, match="truncated.safetensors"):
        load_model(truncated)

    pickle_file = tmp_path / "model.pt"
    torch.save(build_model(ModelConfig()).state_dict(), pickle_file)
    with pytest.raises(BadFileError, match="model.pt"):
        load_model(pickle_file)

    with pytest.raises(BadFileError, match="no such"):
        load_model(tmp_path / "missing.safetensors")


def test_load_refuses_weights_of_another_architecture(tmp_path):
    from safetensors.torch import load_file, save_file

    path = save_model(build_model(ModelConfig()), tmp_path / "m.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    tensors["hidden.weight"] = torch.zeros(32, 256)  # as if trained at 400 px
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(BadFileError, match="do not match"):
        load_model(path)


def test_embedding_is_the_input_of_the_classifier():
    model = build_model(ModelConfig(), seed=0).eval()
    x = torch.rand(4, 3, 257, 257)
    assert torch.allclose(model.classifier(model.embed(x)), model(x))
    assert np.all(model.embed(x).detach().numpy() >= 0)  # after the ReLU
