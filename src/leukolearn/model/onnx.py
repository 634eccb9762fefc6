"""A trained model as ONNX, for use without Python or PyTorch (ONNX Runtime, OpenCV DNN...).

The graph is the PaperCNN with the softmax appended:

    input  "image"          float32 (N, 3, H, W), RGB, pixel / 255, so in [0, 1]
    output "probabilities"  float32 (N, n_classes), rows sum to 1

N is a dynamic axis; H = W = the model's input size. Images must be fitted to that square
as in training: edge-padded to a square, then resized bicubically
(`leukolearn.data.decode.fit_to_square`). The file's metadata_props hold the class names
(JSON list), the input size, the ModelConfig, a stored decision threshold if the model has
one (`leukolearn calibrate`) and the leukolearn version.

The TorchScript exporter (`dynamo=False`) is used: it needs only the `onnx` package, where
the newer torch.export-based one would add `onnxscript`; this network (convolutions,
pooling, linear layers) is exactly what the old exporter handles well.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from leukolearn.data.stain import STAIN_KEY
from leukolearn.errors import LeukolearnError

# torch is imported where used: the CLI reads DEFAULT_OPSET from here at its start, which
# must not cost torch's import (`leukolearn --help` stays fast).
if TYPE_CHECKING:
    from leukolearn.model.cnn import PaperCNN

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
DEFAULT_OPSET = 17
# Most `export` accepts between ONNX Runtime's and PyTorch's probabilities (float32 rounding
# alone stays near 1e-7).
PARITY_TOLERANCE = 1e-5


def _with_softmax(model: PaperCNN):
    """`model` with its softmax appended, as one module to export."""
    import torch
    from torch import nn

    class _WithSoftmax(nn.Module):
        def __init__(self, model: PaperCNN):
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, n_classes)
            return torch.softmax(self.model(x), dim=1)

    return _WithSoftmax(model)


def supported_opsets() -> range:
    """The opsets the TorchScript exporter writes (7 to 20 with torch 2.x)."""
    try:
        from torch.onnx import _constants

        return range(_constants.ONNX_MIN_OPSET,
                     getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET",
                             _constants.ONNX_MAX_OPSET) + 1)
    except (ImportError, AttributeError):  # private names: a torch that moved them
        return range(7, 21)


def check_opset(opset: int) -> None:
    """Refuse an opset the exporter cannot write, before any work: torch would fail
    only inside the export, with the whole graph in its message."""
    opsets = supported_opsets()
    if opset not in opsets:
        raise LeukolearnError(f"--opset {opset}: this torch exports opsets {opsets.start} "
                              f"to {opsets.stop - 1}")


def export_onnx(model: PaperCNN, path: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` (+ softmax) to `path` as ONNX; the model is not changed."""
    import onnx
    import torch

    from leukolearn.files import atomic_write, check_new_file, software_versions

    check_opset(opset)
    if model.config.extra.get(STAIN_KEY):
        raise LeukolearnError("this model normalises each image's stain before the network "
                              "(data.stain); an ONNX file would leave that out and give other "
                              "probabilities, so it is not exported")
    path = check_new_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = model.config
    was_training = model.training
    wrapped = _with_softmax(model).eval()
    example = torch.zeros(1, 3, config.input_size, config.input_size)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                wrapped, (example,), str(tmp), input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        graph = onnx.load(str(tmp))
        props = {
            "class_names": json.dumps(list(config.class_names)),
            "input_size": str(config.input_size),
            "input": (f"float32 (N, 3, {config.input_size}, {config.input_size}) RGB, pixel/255 in "
                      "[0, 1]; images edge-padded to a square, then resized bicubically"),
            "output": "float32 (N, n_classes) softmax probabilities, columns in class_names order",
            "model_config": config.to_json(),
            "leukolearn_version": software_versions()["leukolearn"],
        }
        if "threshold" in config.extra:
            props["threshold"] = str(config.extra["threshold"])
        for key, value in props.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        graph.producer_name = "leukolearn"
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))

    try:
        return atomic_write(path, write)
    finally:
        model.train(was_training)


def onnx_difference(model: PaperCNN, path: str | Path, *, n_images: int = 8,
                    seed: int = 0) -> float:
    """Largest absolute difference between the probabilities ONNX Runtime computes from
    the file at `path` and those PyTorch computes from `model`, on `n_images` random
    images: the check `export` runs on every file it writes."""
    import onnxruntime
    import torch

    size = model.config.input_size
    images = torch.rand(n_images, 3, size, size, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    try:
        with torch.no_grad():
            expected = torch.softmax(model.eval()(images), dim=1).numpy()
    finally:
        model.train(was_training)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    return float(abs(got - expected).max())


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file as a dict."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in graph.metadata_props}
