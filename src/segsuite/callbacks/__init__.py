"""Lightning callbacks of segsuite."""

from segsuite.callbacks.confusion import ConfusionMatrixLogger
from segsuite.callbacks.images import ValidationImageLogger
from segsuite.callbacks.interrupt import StopAfterEpochs
from segsuite.callbacks.iou_table import IoUTableLogger
from segsuite.callbacks.progress import PlainProgress

__all__ = ["ConfusionMatrixLogger", "IoUTableLogger", "PlainProgress", "StopAfterEpochs", "ValidationImageLogger"]
