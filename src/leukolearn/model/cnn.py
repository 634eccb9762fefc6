"""The paper's CNN, sized from its input, and its safe save/load.

Six blocks of Conv3x3 (valid) + ReLU + MaxPool 2x2 with 4, 8, 8, 8, 16, 16 filters,
Flatten, Dense 32 + ReLU, Dense n_classes. At 257x257 with 2 outputs that is 7,210
parameters, 7,342 with 6 (Schouten et al. 2021, Fig 2; marrlab/ClassificationALL).
The softmax lives in the loss and in `predict`, so `forward` returns pre-softmax
class scores, which is what saliency and LRP explain.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from leukolearn.errors import LeukolearnError

PAPER_FILTERS = (4, 8, 8, 8, 16, 16)


def widened_filters(width: int) -> tuple[int, ...]:
    """The paper's filters per block, `width` times as many (1: the paper's CNN)."""
    return tuple(f * width for f in PAPER_FILTERS)


@dataclass(frozen=True)
class ModelConfig:
    input_size: int = 257
    n_classes: int = 2
    class_names: tuple[str, ...] = ("other", "blast")
    filters: tuple[int, ...] = PAPER_FILTERS
    hidden: int = 32
    # Images are fitted to input_size x input_size by `data.decode.fit_to_square`.
    extra: dict = field(default_factory=dict)  # free-form (threshold, training run, ...)

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "filters", tuple(self.filters))
        if len(self.class_names) != self.n_classes:
            raise LeukolearnError(
                f"{self.n_classes} classes but {len(self.class_names)} class names"
            )
        if feature_map_size(self.input_size, len(self.filters)) < 1:
            raise LeukolearnError(
                f"input size {self.input_size} px is too small for {len(self.filters)} "
                f"conv/pool blocks (need at least {min_input_size(len(self.filters))} px)"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls(**json.loads(text))


def feature_map_size(input_size: int, n_blocks: int) -> int:
    """Side of the last feature map: each block is a valid 3x3 conv (-2) then a 2x2 pool."""
    side = input_size
    for _ in range(n_blocks):
        side = (side - 2) // 2
    return side


def min_input_size(n_blocks: int) -> int:
    side = 1
    for _ in range(n_blocks):
        side = side * 2 + 2
    return side


class PaperCNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_channels = 3
        for out_channels in config.filters:
            layers += [nn.Conv2d(in_channels, out_channels, 3), nn.ReLU(), nn.MaxPool2d(2)]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        side = feature_map_size(config.input_size, len(config.filters))
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(in_channels * side * side, config.hidden)
        self.hidden_act = nn.ReLU()
        self.classifier = nn.Linear(config.hidden, config.n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 32-d last hidden layer (after its ReLU), for tSNE. x: (B, 3, H, W) in [0, 1]."""
        return self.hidden_act(self.hidden(self.flatten(self.features(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax class scores (B, n_classes). x: (B, 3, H, W) float, pixel / 255."""
        return self.classifier(self.embed(x))

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` by `embed_fused`: the class scores on the fused kernels' hidden layer."""
        return self.classifier(self.embed_fused(x))

    def embed_fused(self, x: torch.Tensor) -> torch.Tensor:
        """`embed` with each Conv + ReLU + MaxPool block as one fused CPU kernel
        (`leukolearn.model.kernels`; PyTorch's layers where it does not apply). Equal to `forward`
        up to float rounding, 3-4x faster on a CPU; what training and prediction use.
        x may lack the last row / column of an odd-sized input: no block reads them.
        For inference x may also be the uint8 images as stored, (B, H, W, 3): the first
        block then divides by 255 while it reads them (needs the kernels)."""
        from leukolearn.model.kernels import conv_pool_relu, conv_pool_relu_uint8

        convs = list(self.features[0::3])  # (Conv2d, ReLU, MaxPool2d) per block
        if x.dtype == torch.uint8:
            x = conv_pool_relu_uint8(x, convs[0].weight, convs[0].bias)
            convs = convs[1:]
        for conv in convs:
            x = conv_pool_relu(x, conv.weight, conv.bias)
        return self.hidden_act(self.hidden(self.flatten(x)))


def build_model(config: ModelConfig, *, init: str = "keras", seed: int | None = None) -> PaperCNN:
    """A fresh network. `init="keras"` reproduces Keras 2.0's defaults (Glorot-uniform
    weights, zero biases) that the paper relied on; `"torch"` keeps PyTorch's defaults."""
    if seed is not None:
        torch.manual_seed(seed)
    model = PaperCNN(config)
    if init == "keras":
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
    elif init != "torch":
        raise LeukolearnError(f"unknown initialisation {init!r}; use 'keras' or 'torch'")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


