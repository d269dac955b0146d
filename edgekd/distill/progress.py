"""Training progress without a terminal: one plain line per epoch on stderr (a CI log has no
progress bar), with an ETA from this run's epoch times, and the warning for a student that
ended near chance."""
from __future__ import annotations

import logging
import sys
import time
from typing import Optional

log = logging.getLogger("edgekd.distill")

CHANCE_FACTOR = 1.5  # a best accuracy under 1.5 x chance (0.15 for 10 classes) is "near chance"


def fmt_duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class EpochLog:
    """Prints ``epoch E/N  loss L  acc A  val V  T/epoch  ETA X`` to ``stream`` once per epoch;
    the ETA is the mean wall time of the epochs run by this process times the epochs left."""

    def __init__(self, total_epochs: int, stream=None):
        self.total = int(total_epochs)
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.perf_counter()
        self.done = 0

    def line(self, epoch: int, loss: Optional[float], train_acc: Optional[float], val_acc: float) -> str:
        self.done += 1
        per = (time.perf_counter() - self.t0) / self.done
        parts = [f"epoch {epoch}/{self.total}", f"loss {_num(loss)}", f"acc {_num(train_acc, 3)}",
                 f"val {_num(val_acc, 3)}", f"{per:.1f}s/epoch", f"ETA {fmt_duration(per * (self.total - epoch))}"]
        return "  ".join(parts)

    def epoch(self, epoch: int, loss: Optional[float], train_acc: Optional[float], val_acc: float) -> None:
        print(self.line(epoch, loss, train_acc, val_acc), file=self.stream, flush=True)


def _num(v: Optional[float], digits: int = 4) -> str:
    if v is None or v != v:  # None or NaN (an epoch without validation)
        return "-"
    return f"{v:.{digits}f}"


def near_chance(accuracy: float, num_classes: Optional[int]) -> bool:
    return bool(num_classes) and num_classes >= 2 and accuracy == accuracy and \
        accuracy < CHANCE_FACTOR / num_classes


def warn_if_near_chance(accuracy: float, num_classes: Optional[int], epochs: int) -> bool:
    """Log a warning when the best validation accuracy is near chance; True when it was."""
    if not near_chance(accuracy, num_classes):
        return False
    log.warning("the student's best validation accuracy %.3f is near chance (%.3f for %d classes) after "
                "%d epochs: it has barely learned; train longer (--epochs), try another --lr, or check "
                "that the teacher and the labels are right", accuracy, 1.0 / num_classes, num_classes, epochs)
    return True
