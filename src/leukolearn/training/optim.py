"""The optimiser of one training, and its learning-rate schedule.

The paper: RMSprop lr 1e-3 (Keras: rho 0.9, eps 1e-8) for two classes, Adam lr 1e-4 for
more, at a constant rate. Beyond it (`TrainConfig.lr_schedule`): "plateau" halves the rate
when the validation loss has not improved for a fifth of the early-stopping patience
(torch's ReduceLROnPlateau, Keras' callback of the same name), so a training that early
stopping would end gets a few smaller steps first.
"""
from __future__ import annotations

import torch

from leukolearn.model.cnn import PaperCNN
from leukolearn.training.config import TrainConfig
from leukolearn.training.head_start import trainable

PLATEAU_FACTOR = 0.5
PLATEAU_SHARE = 5  # wait patience // 5 epochs (10 of the paper's 50) before halving
MIN_LR = 1e-6


def make_optimizer(model: PaperCNN, config: TrainConfig) -> torch.optim.Optimizer:
    params = trainable(model)  # frozen conv blocks (freeze_features) are left out
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, alpha=0.9, eps=1e-8)
    return torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig
                  ) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The schedule `step(val_loss)` is called with after every epoch; None: constant."""
    if config.lr_schedule == "constant":
        return None
    # threshold 0: any decrease counts as better, as early stopping's min_delta 0 does.
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=PLATEAU_FACTOR, threshold=0.0,
        patience=max(1, config.patience // PLATEAU_SHARE), min_lr=MIN_LR)
