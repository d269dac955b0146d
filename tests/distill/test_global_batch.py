"""--batch-size is the global batch: under torchrun each process takes its share, so a run with
the flags of a one-process run makes the same number of optimizer steps per epoch."""
import pytest

from edgekd.distill.loop import epoch_batches, per_process_batch
from edgekd.distill.train_config import TrainConfig
from edgekd.errors import BadInputError


def test_two_processes_make_the_steps_of_one():
    cfg = TrainConfig(batch_size=16)
    one = epoch_batches(100, cfg, 0, 0, 1)
    two = [epoch_batches(100, cfg, 0, r, 2) for r in (0, 1)]
    assert len(two[0]) == len(two[1]) == len(one) == 7
    assert max(len(b) for b in two[0]) == 8 and max(len(b) for b in one) == 16


def test_a_global_batch_that_does_not_split_is_refused():
    assert per_process_batch(64, 1) == 64 and per_process_batch(64, 4) == 16
    for bad, world in ((15, 2), (2, 2)):
        with pytest.raises(BadInputError, match="global batch"):
            per_process_batch(bad, world)
