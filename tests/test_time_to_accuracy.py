"""`TimeToAccuracy` (when validation first reached each level) and `ValidationSchedule` (sparse, then dense)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from segsuite.callbacks import TimeToAccuracy, ValidationSchedule
from segsuite.callbacks.time_to_accuracy import process_start_time


class Scripted(pl.LightningModule):
    """A linear model whose validation logs `val/mIoU` from a script, one value per validation."""

    def __init__(self, scores):
        super().__init__()
        self.net = nn.Linear(2, 1)
        self.scores = list(scores)
        self.validated_epochs = []

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.validated_epochs.append(self.current_epoch + 1)
        self.log("val/mIoU", self.scores[len(self.validated_epochs) - 1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader():
    return DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)


def fit(module, epochs, callbacks, root):
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, default_root_dir=root, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(module, loader(), loader())
    return trainer


@pytest.mark.parametrize("epochs, every, dense_from, expected", [
    (10, 5, 0.5, [5, 6, 7, 8, 9, 10]),   # every 5th over the first half, then each epoch
    (6, 2, 0.5, [2, 4, 5, 6]),
    (7, 3, 0.0, [1, 2, 3, 4, 5, 6, 7]),  # dense from the start: Lightning's every epoch
    (7, 3, 1.0, [3, 6, 7]),              # sparse throughout, and the last epoch always
])
def test_validation_schedule_validates_the_epochs_it_promises_in_a_real_fit(tmp_path, epochs, every, dense_from,
                                                                            expected):
    module = Scripted([0.0] * epochs)
    fit(module, epochs, [ValidationSchedule(every_n_epochs=every, dense_from=dense_from)], tmp_path)
    assert module.validated_epochs == expected


def test_validation_schedule_off_leaves_lightnings_interval(tmp_path):
    module = Scripted([0.0] * 6)
    trainer = pl.Trainer(max_epochs=6, callbacks=[ValidationSchedule(every_n_epochs=None)], default_root_dir=tmp_path,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
                         check_val_every_n_epoch=3)
    trainer.fit(module, loader(), loader())
    assert module.validated_epochs == [3, 6]


@pytest.mark.parametrize("kwargs", [{"every_n_epochs": 0}, {"every_n_epochs": 2.5}, {"dense_from": 1.5}])
def test_validation_schedule_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError, match="ValidationSchedule"):
        ValidationSchedule(**kwargs)


def test_time_to_accuracy_records_the_first_validation_at_or_above_each_level(tmp_path):
    scores = [0.2, 0.45, 0.5, 0.3, 0.7]
    callback = TimeToAccuracy(levels=[0.6, 0.4, 0.5, 0.9])
    before = time.time() - process_start_time()
    fit(Scripted(scores), len(scores), [callback], tmp_path)
    after = time.time() - process_start_time()
    record = json.loads((tmp_path / "time_to_accuracy.json").read_text())
    levels = record["levels"]
    assert list(levels) == ["0.4", "0.5", "0.6", "0.9"]
    assert [levels[k]["epoch"] for k in ("0.4", "0.5", "0.6")] == [1, 2, 4]   # epochs count from 0
    assert [levels[k]["value"] for k in ("0.4", "0.5", "0.6")] == pytest.approx([0.45, 0.5, 0.7])
    assert levels["0.9"] is None
    seconds = [v["seconds"] for v in record["validations"]]
    assert [v["value"] for v in record["validations"]] == pytest.approx(scores)
    assert seconds == sorted(seconds) and before - 0.1 <= seconds[0] and seconds[-1] <= after + 0.1


def test_a_resumed_run_continues_the_clock_of_the_run_it_resumes():
    first = TimeToAccuracy(levels=[0.5])
    first.reached = {"0.5": {"seconds": 30.0, "epoch": 3, "step": 40, "value": 0.55}}
    state = {**first.state_dict(), "elapsed": 1000.0}
    resumed = TimeToAccuracy(levels=[0.5])
    resumed.load_state_dict(state)
    in_this_process = time.time() - resumed.start
    assert resumed.elapsed() == pytest.approx(1000.0 + in_this_process, abs=0.5)
    assert resumed.reached == first.reached


def test_process_start_time_is_when_this_process_began():
    if shutil.which("ps") is None:
        pytest.skip("ps (procps) gives the independent reading of the process age")
    age = int(subprocess.run(["ps", "-o", "etimes=", "-p", str(os.getpid())], capture_output=True, text=True,
                             check=True).stdout)  # whole seconds since this process started
    # both readings are whole seconds somewhere: ps floors the age, /proc/stat gives the boot time in seconds
    assert process_start_time() == pytest.approx(time.time() - age, abs=2.5)


def test_time_to_accuracy_refuses_levels_that_are_not_fractions():
    with pytest.raises(ValueError, match="levels"):
        TimeToAccuracy(levels=[50])
