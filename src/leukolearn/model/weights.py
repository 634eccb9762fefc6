"""The model file: safetensors weights with the ModelConfig and a checksum in its metadata.

Loading never runs code (no pickle), and a damaged or foreign file is refused with one
line naming it. FORMAT_VERSION 1 files (no checksum) are still read.

An ensemble file (`train --ensemble K`, ENSEMBLE_VERSION) holds K networks in one file:
their tensors under "member{i}.", their configs as a JSON list, one checksum over all. A
single network is still saved as FORMAT_VERSION, which earlier versions read; they refuse
an ensemble file by its version, with one line.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from pathlib import Path
import torch

from leukolearn.errors import BadFileError, LeukolearnError
from leukolearn.files import atomic_write
from leukolearn.model.cnn import ModelConfig, PaperCNN


FORMAT_VERSION = 2  # bump when the saved layout changes; load refuses versions it does not know
# 1: no checksum (still read: files saved before version 2); 2: a checksum of the weights;
# 3: several networks (an ensemble), each with its config, one checksum.
ENSEMBLE_VERSION = 3
_READABLE_VERSIONS = ("1", "2", "3")


def save_model(model: PaperCNN, path: str | Path) -> Path:
    """Weights as safetensors, the ModelConfig and a checksum of the weights in its metadata:
    loading never runs code, and a damaged file is refused. A write that fails (a full
    disk) raises OSError naming `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "leukolearn_format": str(FORMAT_VERSION),
        "model_config": model.config.to_json(),
        "weights_blake2b": weights_digest(tensors),
    }
    # atomic: a reader never sees half a file, a full disk leaves none behind
    return atomic_write(path, lambda tmp: save_tensors(tensors, tmp, metadata))


def save_models(models: list[PaperCNN], path: str | Path) -> Path:
    """One network as `save_model` saves it; several as one ensemble file (see the module
    docstring), loaded back by `load_models`."""
    if len(models) == 1:
        return save_model(models[0], path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"member{i}.{k}": v.detach().cpu().contiguous()
               for i, m in enumerate(models) for k, v in m.state_dict().items()}
    metadata = {
        "leukolearn_format": str(ENSEMBLE_VERSION),
        "model_configs": json.dumps([json.loads(m.config.to_json()) for m in models]),
        "weights_blake2b": weights_digest(tensors),
    }
    return atomic_write(path, lambda tmp: save_tensors(tensors, tmp, metadata))


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path,
                 metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, whose I/O errors become OSError: safetensors raises its own
    SafetensorError ("Error while serializing: I/O error: No space left on device (os
    error 28)"), which no caller expects from a write and which the CLI would show as a
    traceback; as an OSError it is the one line every other failed write gives."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as exc:
        raise _as_os_error(exc, path) from exc


def _as_os_error(exc: Exception, path: str | Path) -> OSError:
    code = re.search(r"os error (\d+)", str(exc))
    if code:  # OSError(errno, ...) is the matching subclass (PermissionError for EACCES)
        number = int(code.group(1))
        return OSError(number, os.strerror(number), str(path))
    return OSError(errno.EIO, _one_line(exc), str(path))


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of names, dtypes, shapes and bytes of the tensors: safetensors has no checksum
    of its own, so without this a changed byte in the data would load silently."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_model(path: str | Path) -> PaperCNN:
    """Load a network saved by `save_model`; every problem is a `BadFileError` naming the
    file, an ensemble file too (a command that takes one network cannot use it)."""
    models = load_models(path)
    if len(models) > 1:
        raise BadFileError(path, f"an ensemble of {len(models)} networks (`train --ensemble`): "
                                 "predict, evaluate and calibrate take it, this needs one network")
    return models[0]


def load_models(path: str | Path) -> list[PaperCNN]:
    """The networks of a model file: one (`save_model`) or an ensemble's (`save_models`);
    every problem is a `BadFileError` naming the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise BadFileError(path, "no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BadFileError(path, f"not a readable leukolearn model ({_one_line(exc)})") from None
    version = metadata.get("leukolearn_format")
    ensemble = version == str(ENSEMBLE_VERSION)
    if version is None or ("model_configs" if ensemble else "model_config") not in metadata:
        raise BadFileError(path, "not a leukolearn model (no model config in the file)")
    if version not in _READABLE_VERSIONS:
        raise BadFileError(path, f"model format version {version}, this leukolearn reads "
                                 f"{', '.join(_READABLE_VERSIONS[:-1])} and {_READABLE_VERSIONS[-1]}")
    digest = metadata.get("weights_blake2b")
    if version != "1" and digest is None:
        raise BadFileError(path, "damaged: the checksum of the weights is missing")
    if digest is not None and weights_digest(tensors) != digest:
        raise BadFileError(path, "damaged: the weights do not match the checksum stored "
                                 "with them (the file was changed after it was saved)")
    try:
        if not ensemble:
            return [_network(metadata["model_config"], tensors)]
        configs = json.loads(metadata["model_configs"])
        if not isinstance(configs, list) or len(configs) < 2:
            raise ValueError("an ensemble file needs the configs of 2 or more networks")
        models = [_network(json.dumps(c), {k[len(f"member{i}."):]: v for k, v in tensors.items()
                                           if k.startswith(f"member{i}.")})
                  for i, c in enumerate(configs)]
        if sum(len(m.state_dict()) for m in models) != len(tensors):
            raise ValueError("tensors of networks the file has no config for")
        if len({(m.config.input_size, m.config.class_names) for m in models}) > 1:
            raise ValueError("its networks disagree on input size or classes")
        return models
    except (TypeError, ValueError, json.JSONDecodeError, LeukolearnError, RuntimeError) as exc:
        raise BadFileError(
            path, f"weights do not match the stored architecture ({_one_line(exc)})") from None


def _network(config_json: str, tensors: dict[str, torch.Tensor]) -> PaperCNN:
    """A network of `config_json` holding `tensors`; ValueError naming the first tensor
    whose name or shape the architecture does not have."""
    config = ModelConfig.from_json(config_json)
    with torch.device("meta"):  # shapes only: a config claiming a huge input allocates nothing
        expected = {k: tuple(v.shape) for k, v in PaperCNN(config).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if found != expected:
        wrong = sorted(set(found) ^ set(expected)) or [k for k in expected if found[k] != expected[k]]
        raise ValueError(f"{wrong[0]}: stored {found.get(wrong[0])}, "
                         f"architecture needs {expected.get(wrong[0])}")
    model = PaperCNN(config)
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def _one_line(exc: Exception, limit: int = 300) -> str:
    """An exception's message on one line (torch lists every mismatched tensor on its own)."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit - 3] + "..."
