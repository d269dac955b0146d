"""Progress without a terminal: distill with stderr in a file logs one line per epoch with loss,
accuracy and an ETA, and warns when the student ends near chance."""
from __future__ import annotations

import io
import logging
import re

from edgekd.distill.progress import EpochLog, fmt_duration, near_chance, warn_if_near_chance

LINE = re.compile(r"^epoch (\d+)/(\d+)  loss [\d.]+  acc [\d.]+  val [\d.]+  [\d.]+s/epoch  ETA \S+$")


def test_distill_logs_a_line_per_epoch_when_stderr_is_a_file(tiny_assets, tmp_path, run_cli):
    r = run_cli("distill", "--teacher", tiny_assets / "teacher.pt", "--student", "convnet:width=4,depth=1,res=16",
                "--data", "digits", "--epochs", "2", "--no-export", "--out", tmp_path / "d")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("epoch ")]
    assert [LINE.match(ln).groups() for ln in lines] == [("1", "2"), ("2", "2")], r.stderr
    assert lines[-1].endswith("ETA 0s")
    # the teacher is untrained, so the student cannot beat chance by much: said once, on stderr
    assert r.stderr.count("near chance") == 1 and "for 10 classes" in r.stderr


def test_epoch_log_eta_counts_the_epochs_left():
    log = EpochLog(10, stream=io.StringIO())
    log.t0 -= 4.0  # as if 4 s had passed in the first epoch
    line = log.line(1, 0.5, 0.4, float("nan"))
    assert "val -" in line and line.endswith("ETA 36s")
    assert fmt_duration(185) == "3m05s" and fmt_duration(3720) == "1h02m" and fmt_duration(-1) == "0s"


def test_near_chance_rule(caplog):
    assert near_chance(0.117, 10) and not near_chance(0.16, 10) and not near_chance(0.1, None)
    assert near_chance(0.70, 2) and not near_chance(0.80, 2)
    with caplog.at_level(logging.WARNING, logger="edgekd.distill"):
        assert warn_if_near_chance(0.117, 10, 5)
        assert not warn_if_near_chance(0.9, 10, 5)
    assert len(caplog.records) == 1 and "0.117 is near chance (0.100 for 10 classes)" in caplog.records[0].message
