"""What a hostile checkout, file or cache entry must not be able to do (README, "Security")."""
from __future__ import annotations

import os
import stat

import pytest


# ---------------------------------------------------------------------- the umask is only read


def test_umask_is_read_without_being_set(tmp_path, monkeypatch):
    from edgekd import util_io

    old = os.umask(0o027)
    try:
        def no_set(mask):
            raise AssertionError("os.umask called: it sets the mask for every thread")

        monkeypatch.setattr(util_io.os, "umask", no_set)
        assert util_io._umask() == 0o027
        util_io.atomic_write_text(tmp_path / "f.txt", "x")
        assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o640
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_umask_without_proc_is_the_one_read_at_import(monkeypatch, tmp_path):
    from edgekd import util_io

    monkeypatch.setattr(util_io, "_PROC_STATUS", str(tmp_path / "absent"))
    monkeypatch.setattr(util_io, "_IMPORT_UMASK", 0o077)
    monkeypatch.setattr(util_io.os, "umask", lambda m: pytest.fail("os.umask called"))
    assert util_io._umask() == 0o077
