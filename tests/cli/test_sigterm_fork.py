"""SIGTERM is the command's Ctrl-C in edgekd's own process only: a fork of it (a library's
helper process, such as OpenVINO's and NNCF's telemetry sender, which they terminate when its
request times out) ends as the signal ends it, with no traceback on the user's stderr."""
import multiprocessing
import os
import signal
import time

import pytest

from edgekd.cli import main as M


def _wait():
    time.sleep(30)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_terminated_ends_quietly(capfd):
    old = M._sigterm_as_interrupt()
    try:
        child = multiprocessing.get_context("fork").Process(target=_wait)
        child.start()
        time.sleep(0.5)  # let it reach its sleep
        child.terminate()
        child.join(20)
        assert child.exitcode == -signal.SIGTERM  # ended by the signal, as without edgekd's handler
        err = capfd.readouterr().err
        assert "Traceback" not in err and "Terminated" not in err
        # in this process the handler still turns SIGTERM into the interrupt path
        with pytest.raises(M.Terminated):
            M._raise_terminated(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)
