"""Size and peak memory (latency.memory): what is counted, and a peak that tracks a known allocation."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.backends.base import Artifact
from edgekd.latency.memory import MemoryUse, artifact_size, measure_memory, measure_peak, memory_from_dict

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory reads Linux /proc")


class Hungry:
    """A session whose first run touches ``mb`` megabytes and keeps them, as an arena would."""

    def __init__(self, mb):
        self.mb, self.kept = mb, None

    def run(self, x):
        if self.kept is None:  # written: resident, not just reserved
            self.kept = np.ones(self.mb << 20, dtype=np.uint8)
        return [x]


def test_size_counts_every_file_of_an_artifact(tmp_path):
    xml, bin_ = tmp_path / "m.xml", tmp_path / "m.bin"
    xml.write_bytes(b"x" * 100)
    bin_.write_bytes(b"y" * 900)
    art = Artifact.from_file(xml, "openvino-ir", extra_paths=(bin_,))
    assert artifact_size(art) == (1000, "openvino-ir")


def test_size_of_a_module_held_in_memory_is_its_tensors():
    m = torch.nn.Linear(10, 4)  # 44 float32 values
    art = Artifact(path=Path("spec"), format="torch-eager", sha256="0" * 64, meta={"module": m})
    size, what = artifact_size(art)
    assert size == 44 * 4 and "parameters" in what


@linux
def test_peak_tracks_what_the_first_run_allocates():
    small, _, _ = measure_peak(lambda: Hungry(1), (1, 4))
    big, how, session = measure_peak(lambda: Hungry(64), (1, 4))
    assert "rss" in how and session.kept is not None
    assert 60 << 20 <= big <= 80 << 20
    assert small < 16 << 20


@linux
def test_measure_memory_closes_its_session_and_round_trips(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"z" * 2048)
    art = Artifact.from_file(f, "onnx")
    closed = []

    class S(Hungry):
        planned_arena_bytes = 123

        def close(self):
            closed.append(True)

    mem = measure_memory(art, None, (1, 2), load=lambda: S(8))
    assert closed == [True] and mem.size_bytes == 2048 and mem.planned_arena_bytes == 123
    assert mem.peak_mb >= 7.5
    assert memory_from_dict(mem.to_dict()) == mem
    assert "size 2.0 KB (onnx)" in mem.describe()
    assert memory_from_dict(None) is None and isinstance(mem, MemoryUse)


@linux
def test_bench_reports_size_and_peak_beside_latency():
    from edgekd.latency.bench import bench
    from edgekd.targets import MeasureSettings

    fast = MeasureSettings(warmup_s=0.0, warmup_iters=2, min_iters=10, min_time_s=0.0)
    r = bench("convnet:width=8,depth=2,res=16", "ort-cpu", settings=fast, reference=False, memory=True)
    assert r.memory.size_of == "onnx" and r.memory.size_bytes > 1000
    assert r.memory.peak_bytes is not None and r.memory.peak_source.startswith("rss")
    assert r.memory.peak_source.endswith("(fresh process)")  # a runtime may keep scratch across loads
    d = r.to_dict()["memory"]
    assert bench("convnet:width=8,depth=2,res=16", "ort-cpu", settings=fast, reference=False).memory is None
    assert d["size_bytes"] == r.memory.size_bytes and d["peak_mb"] == r.memory.peak_mb
