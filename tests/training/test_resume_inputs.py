"""Resuming with inputs that do not fit: one clear error, the saved files untouched."""

import pytest

from recbole_hyper.quick_start import run_recbole_hyper
from recbole_hyper.training.resume import ResumeError, last_state_path
from tests.helpers import train_tiny

pytestmark = pytest.mark.slow


def test_resuming_with_another_shape_is_one_clear_error(tiny_dataset, in_tmp):
    path = train_tiny(tiny_dataset)
    before = open(path, "rb").read()
    with pytest.raises(ResumeError, match="does not fit this run's model"):
        run_recbole_hyper(resume=last_state_path(path), config_dict={"hidden_size": 32}, count_flops=False)
    assert open(path, "rb").read() == before, "the saved files stay as they were"
