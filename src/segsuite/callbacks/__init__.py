"""Lightning callbacks of segsuite."""

from segsuite.callbacks.checkpoints import KeepBestOnResume, LastCheckpoint
from segsuite.callbacks.confusion import ConfusionMatrixLogger
from segsuite.callbacks.finite import FiniteTraining, NonFiniteTrainingError
from segsuite.callbacks.images import ValidationImageLogger
from segsuite.callbacks.interrupt import FailAtStep, StopAfterEpochs
from segsuite.callbacks.iou_table import IoUTableLogger
from segsuite.callbacks.progress import PlainProgress
from segsuite.callbacks.resume import CheckpointOnFailure, ContinueInterruptedEpoch, StepSeed
from segsuite.callbacks.time_to_accuracy import TimeToAccuracy
from segsuite.callbacks.validation_schedule import ValidationSchedule

__all__ = ["CheckpointOnFailure", "ConfusionMatrixLogger", "ContinueInterruptedEpoch", "FailAtStep", "FiniteTraining",
           "IoUTableLogger", "KeepBestOnResume", "LastCheckpoint", "NonFiniteTrainingError", "PlainProgress",
           "StepSeed", "StopAfterEpochs", "TimeToAccuracy", "ValidationImageLogger", "ValidationSchedule"]
