"""Runs made to go wrong on purpose, for the tests: an epoch whose weights are the worst so far.

A run reaches it as `+callbacks.worse._target_=support.drills.WorseAtEpochs` with `tests/` on its
`PYTHONPATH` (the `support_on_pythonpath` fixture of tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch import nn


class WorseAtEpochs(pl.Callback):
    """Before the validation of each epoch in `epochs` (1-based), make the network predict its last
    class everywhere: every weight zero, the classifier's last bias one.

    The weights validated, checkpointed and (if selected) tested are these, so the epoch scores
    worse than any trained one; what a run selects as its best can then be checked exactly.
    """

    def __init__(self, epochs: Sequence[int]) -> None:
        self.epochs = {int(e) for e in epochs}

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch + 1 not in self.epochs:
            return
        num_classes = int(pl_module.num_classes)
        classifier = next(m for m in reversed(list(pl_module.net.modules()))
                          if isinstance(m, nn.Conv2d) and m.out_channels == num_classes and m.bias is not None)
        with torch.no_grad():
            for param in pl_module.net.parameters():
                param.zero_()
            classifier.bias[-1] = 1.0
