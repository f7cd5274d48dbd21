"""Lightning callbacks of segsuite."""

from segsuite.callbacks.interrupt import StopAfterEpochs

__all__ = ["StopAfterEpochs"]
