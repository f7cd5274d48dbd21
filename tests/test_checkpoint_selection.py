"""The checkpoint a run selects: best.ckpt, the final table and the test score are one epoch, through any
number of resumes; without validation, last.ckpt is written every epoch and is what the run selects."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from runs import metrics, run_module, train, val_rows

pytestmark = pytest.mark.usefixtures("support_on_pythonpath")  # the runs import support.drills

STOP_AFTER_ONE = ["+callbacks.stop._target_=segsuite.callbacks.StopAfterEpochs", "+callbacks.stop.epochs=1"]


def worse_at(*epochs: int) -> list[str]:
    """The network predicts one class everywhere before these epochs' validation (1-based)."""
    return ["+callbacks.worse._target_=support.drills.WorseAtEpochs",
            f"+callbacks.worse.epochs={list(epochs)}"]


def ckpt(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    return a["state_dict"].keys() == b["state_dict"].keys() and all(
        torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())


def summary(stdout: str) -> tuple[str, str]:
    """The title and the summary line of the final validation table."""
    lines = stdout.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("Validation metrics of the best epoch"))
    return lines[i], next(line for line in lines[i:] if line.startswith("aAcc"))


def test_after_a_resume_best_ckpt_the_table_and_the_test_are_the_best_epoch(tmp_path):
    """Train 2 of 3 epochs; resume to 3, which scores worst: best.ckpt, the table and the test stay at the best
    of epochs 1-2 (before the fix, best.ckpt and the test took epoch 3 and the table named another)."""
    part, resumed = tmp_path / "part", tmp_path / "resumed"
    common = ["trainer.max_epochs=3", "trainer.deterministic=true"]
    train(part, *common, "+callbacks.stop._target_=segsuite.callbacks.StopAfterEpochs", "+callbacks.stop.epochs=2")
    proc = train(resumed, *common, f"ckpt_path={part / 'checkpoints' / 'last.ckpt'}", *worse_at(3))
    scores = [float(r["val/mIoU"]) for r in val_rows(part) + val_rows(resumed)]
    assert len(scores) == 3 and scores[2] < max(scores[:2])
    best = max(range(2), key=lambda i: (scores[i], -i)) + 1   # the first of equals, as ModelCheckpoint keeps
    stored = ckpt(resumed / "checkpoints" / "best.ckpt")
    # the weights of epoch `best`: part's last.ckpt holds epoch 2, its best.ckpt (checked) epoch 1 if that won
    trained = ckpt(part / "checkpoints" / ("last.ckpt" if best == 2 else "best.ckpt"))
    assert stored["epoch"] + 1 == trained["epoch"] + 1 == best and same_weights(stored, trained)
    title, line = summary(proc.stdout)
    assert title.startswith(f"Validation metrics of the best epoch ({best}, by val/mIoU, checkpoint best.ckpt)")
    assert f"mIoU {100 * scores[best - 1]:.2f}" in line
    assert f"best checkpoint: {resumed / 'checkpoints' / 'best.ckpt'}" in proc.stdout
    assert metrics(resumed)["val/mIoU_best"] == pytest.approx(max(scores))
    # the test scored those weights: the run that trained them tested the same epoch before any resume
    assert metrics(resumed)["test/mIoU"] == pytest.approx(metrics(part)["test/mIoU"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["run moved", "best.ckpt deleted"])
def test_a_resume_finds_a_moved_best_and_without_one_chooses_among_its_own_epochs(tmp_path, case):
    """The resumed run's best.ckpt is found beside its last.ckpt when the run directory moved; when it is
    gone, the best is chosen among the epochs after the resume, and table, best.ckpt and test still agree."""
    part, resumed = tmp_path / "part", tmp_path / "resumed"
    common = ["trainer.max_epochs=3", "trainer.deterministic=true"]
    train(part, *common, "+callbacks.stop._target_=segsuite.callbacks.StopAfterEpochs", "+callbacks.stop.epochs=2",
          "test=false")
    if case == "run moved":
        part = part.rename(tmp_path / "moved")
    else:
        (part / "checkpoints" / "best.ckpt").unlink()
    expected = ckpt(part / "checkpoints" / "best.ckpt") if case == "run moved" else None
    proc = train(resumed, *common, f"ckpt_path={part / 'checkpoints' / 'last.ckpt'}", *worse_at(3))
    stored = ckpt(resumed / "checkpoints" / "best.ckpt")
    expected = expected or ckpt(resumed / "checkpoints" / "last.ckpt")  # epoch 3, the only one left to choose
    assert stored["epoch"] == expected["epoch"] and same_weights(stored, expected)
    title, _ = summary(proc.stdout)
    assert title.startswith(f"Validation metrics of the best epoch ({expected['epoch'] + 1}, by val/mIoU")
    assert case == "run moved" or "is missing; best.ckpt is chosen among the epochs" in proc.stdout + proc.stderr
    out = tmp_path / "eval"
    run_module("evaluate", [f"ckpt_path={resumed / 'checkpoints' / 'best.ckpt'}", "split=test", f"hydra.run.dir={out}",
                            "num_workers=0", "trainer.enable_progress_bar=false"], cwd=tmp_path)
    assert metrics(resumed)["test/mIoU"] == pytest.approx(metrics(out)["test/mIoU"], abs=1e-6)


@pytest.mark.slow
def test_best_epoch_survives_several_resumes_and_epochs_without_validation(tmp_path):
    """Validation every 2nd epoch (2 and 4), resumed after epochs 1, 2 and 3, epoch 4 the worst: every epoch
    leaves a last.ckpt to resume from, and the best stays epoch 2 in its third run directory; the test
    score is what evaluate gives its checkpoint."""
    common = ["trainer.max_epochs=4", "trainer.check_val_every_n_epoch=2", "trainer.deterministic=true"]
    runs = [tmp_path / f"run{i}" for i in range(4)]
    procs = [train(runs[0], *common, *STOP_AFTER_ONE, "test=false")]
    for previous, run in itertools.pairwise(runs):
        last = previous / "checkpoints" / "last.ckpt"
        assert ckpt(last)["epoch"] == runs.index(previous)  # written every epoch, validated or not
        extra = STOP_AFTER_ONE + ["test=false"] if run != runs[-1] else worse_at(4)
        procs.append(train(run, *common, f"ckpt_path={last}", *extra))
    assert [len(val_rows(r)) for r in runs] == [0, 1, 0, 1]
    scores = [float(r["val/mIoU"]) for r in val_rows(runs[1]) + val_rows(runs[3])]
    assert scores[1] < scores[0]
    # validated epochs 2 and 4 are scores[0] and scores[1]
    stored = ckpt(runs[3] / "checkpoints" / "best.ckpt")
    assert stored["epoch"] + 1 == 2 and same_weights(stored, ckpt(runs[1] / "checkpoints" / "last.ckpt"))
    title, line = summary(procs[-1].stdout)
    assert title.startswith("Validation metrics of the best epoch (2, by val/mIoU, checkpoint best.ckpt)")
    assert f"mIoU {100 * scores[0]:.2f}" in line
    out = tmp_path / "eval"
    run_module("evaluate", [f"ckpt_path={runs[1] / 'checkpoints' / 'last.ckpt'}", "split=test", f"hydra.run.dir={out}",
                            "num_workers=0", "trainer.enable_progress_bar=false"], cwd=tmp_path)
    assert metrics(runs[3])["test/mIoU"] == pytest.approx(metrics(out)["test/mIoU"], abs=1e-6)


@pytest.mark.slow  # four short runs, ~30 s
def test_without_validation_last_ckpt_is_written_every_epoch_selected_and_tested(tmp_path):
    """An empty val split fails naming the override that trains without validation; that override, as
    printed, trains: last.ckpt after every epoch (a resume continues from it), named as the selection
    and tested (before the fix, no checkpoint was written and the override failed: not in struct)."""
    failed = train(tmp_path / "x", "dataset.val.num_images=0", check=False)
    assert failed.returncode == 1
    advice = re.search(r"without validation say so with (\S+)", failed.stderr).group(1)
    part, resumed = tmp_path / "part", tmp_path / "resumed"
    train(part, "dataset.val.num_images=0", advice, *STOP_AFTER_ONE, "test=false")
    last = part / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"] and ckpt(last)["epoch"] == 0
    proc = train(resumed, "dataset.val.num_images=0", advice, f"ckpt_path={last}")
    last = resumed / "checkpoints" / "last.ckpt"
    assert ckpt(last)["epoch"] == 1 and ckpt(last)["global_step"] == 2 * 16 // 4
    assert "Selected epoch 2 (the newest checkpoint, checkpoint last.ckpt): not validated" in proc.stdout
    assert f"selected checkpoint: {last}" in proc.stdout
    out = tmp_path / "eval"
    run_module("evaluate", [f"ckpt_path={last}", "split=test", f"hydra.run.dir={out}", "num_workers=0",
                            "trainer.enable_progress_bar=false"], cwd=tmp_path)
    assert metrics(resumed)["test/mIoU"] == pytest.approx(metrics(out)["test/mIoU"], abs=1e-6)
