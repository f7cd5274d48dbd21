"""`ValidationCounter`: when the visual callbacks act (every n-th validation, sanity checks excluded)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from segsuite.callbacks import ConfusionMatrixLogger, ValidationImageLogger
from segsuite.callbacks.targets import ValidationCounter


def test_every_third_validation_from_the_first_and_sanity_checks_do_not_count():
    counter = ValidationCounter(3, "test")
    sanity, real = SimpleNamespace(sanity_checking=True), SimpleNamespace(sanity_checking=False)
    assert counter.due(sanity) is False
    assert [counter.due(real) for _ in range(7)] == [True, False, False, True, False, False, True]


@pytest.mark.parametrize("make", [lambda: ConfusionMatrixLogger(every_n_epochs=0),
                                  lambda: ValidationImageLogger(every_n_epochs=0)])
def test_callbacks_refuse_a_non_positive_interval(make):
    with pytest.raises(ValueError, match="every_n_epochs must be >= 1"):
        make()
