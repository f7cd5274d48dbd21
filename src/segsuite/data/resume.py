"""Mid-epoch resume: a run resumed from a checkpoint written inside an epoch trains that epoch's remaining
batches, the ones the interrupted run had not reached. The one module that touches Lightning's loop state."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from segsuite.data.samplers import SeededTrainSampler

log = logging.getLogger(__name__)


def batches_done_in_resumed_epoch(trainer: pl.Trainer | None) -> int:
    """Training batches of the current epoch that a checkpoint being resumed had already run (0 when
    the run is not resuming, or resumes at an epoch boundary).

    Lightning then runs only the epoch's remaining batches; `continue_interrupted_epoch` makes them
    the ones the interrupted run had not reached.
    """
    if trainer is None or not trainer.fit_loop.restarting:
        return 0
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def restart_training_iterator(trainer: pl.Trainer) -> None:
    """Rebuild the fit loop's training iterator (Lightning keeps the one it made before restoring a
    checkpoint). The one place that touches Lightning's private loop state;
    tests/test_run_safety.py fails if Lightning changes it."""
    fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
    if fetcher is None:
        raise RuntimeError("pytorch_lightning's fit loop has no `_data_fetcher`: segsuite's mid-epoch resume "
                           "needs updating for this Lightning version")
    iter(fetcher)


def continue_interrupted_epoch(trainer: pl.Trainer) -> int:
    """On a resume from a checkpoint written mid-epoch, make the training loader continue the epoch
    where the checkpoint left it; return the batches skipped (0 when not resuming mid-epoch, or when the
    loader's sampler is not a `SeededTrainSampler`).

    Lightning builds the training iterator before it restores the checkpoint (to count the
    stepping batches for the schedule), so that iterator would start the epoch over. The
    sampler is set to the checkpoint's epoch and position, and the loop's iterator rebuilt.
    """
    loader = trainer.train_dataloader
    sampler = getattr(loader, "sampler", None)
    done = batches_done_in_resumed_epoch(trainer)
    if not isinstance(sampler, SeededTrainSampler) or not 0 < done < trainer.num_training_batches:
        return 0
    sampler.set_epoch(trainer.current_epoch)
    sampler.start_next_epoch_at(done * loader.batch_size)
    restart_training_iterator(trainer)
    log.info("resuming mid-epoch: epoch %d continues at its batch %d of %d", trainer.current_epoch + 1, done + 1,
             trainer.num_training_batches)
    return done
