import numpy as np
import pytest
from scipy.stats import binom

from edgekd.latency.measure import make_inputs, measure_loads, measure_session
from edgekd.latency.stats import LatencyStats, quantile_ci, quantile_ci_ranks
from edgekd.targets import MeasureSettings


class VirtualClock:
    def __init__(self):
        self.ns = 0

    def __call__(self):
        return self.ns


class FakeSession:
    """Each run advances the virtual clock by the next latency from a script."""

    input_names = ["input"]
    input_dtypes = [np.float32]

    def __init__(self, clock, first_ms, steady_ms):
        self.clock, self.first_ms, self.steady = clock, first_ms, steady_ms
        self.calls = 0
        self.seen = []

    def run(self, x):
        ms = self.first_ms if self.calls == 0 else self.steady(self.calls)
        self.calls += 1
        self.seen.append(id(x))
        self.clock.ns += int(ms * 1e6)
        return [x]

    closed = False

    def close(self):
        self.closed = True


def test_protocol_first_inference_apart_time_based_warmup_and_minimums():
    clock = VirtualClock()
    s = FakeSession(clock, first_ms=50.0, steady_ms=lambda i: 1.0)
    settings = MeasureSettings(warmup_s=0.05, warmup_iters=10, min_iters=200, min_time_s=0.5)
    m = measure_session(s, np.zeros((1, 1, 4, 4), np.float32), settings, clock=clock)
    assert m.first_inference_ms == pytest.approx(50.0)
    assert m.warmup_iters == 50  # time-based: 0.05 s of 1 ms runs, more than the 10-iteration floor
    assert m.stats.n == 500  # min_time_s (0.5 s) dominates min_iters (200)
    assert m.stats.max == pytest.approx(1.0)  # the 50 ms first run is not among the samples
    assert len(set(s.seen)) == 1  # the same prepared input every time


def test_protocol_iteration_floors_when_runs_are_slow():
    clock = VirtualClock()
    s = FakeSession(clock, first_ms=5.0, steady_ms=lambda i: 20.0)
    settings = MeasureSettings(warmup_s=0.01, warmup_iters=10, min_iters=30, min_time_s=0.0)
    m = measure_session(s, np.zeros(3, np.float32), settings, clock=clock)
    assert m.warmup_iters == 10 and m.stats.n == 30


def test_unstable_flag_from_iqr():
    clock = VirtualClock()
    bimodal = lambda i: 1.0 if i % 2 else 2.0  # noqa: E731
    m = measure_session(FakeSession(clock, 1.0, bimodal), np.zeros(1, np.float32),
                        MeasureSettings(warmup_s=0, warmup_iters=1, min_iters=100, min_time_s=0),
                        clock=clock)
    assert m.stats.unstable and m.stats.iqr_over_median > 0.1
    clock2 = VirtualClock()
    steady = measure_session(FakeSession(clock2, 1.0, lambda i: 1.0), np.zeros(1, np.float32),
                             MeasureSettings(warmup_s=0, warmup_iters=1, min_iters=100, min_time_s=0),
                             clock=clock2)
    assert not steady.stats.unstable


def test_stats_values_on_known_samples():
    x = np.arange(1, 1001, dtype=float)  # 1..1000 ms
    s = LatencyStats.from_samples(x)
    assert s.p50 == pytest.approx(500.5) and s.p90 == pytest.approx(900.1)
    assert s.min == 1 and s.max == 1000 and s.n == 1000 and s.p99_trustworthy
    lo, hi = s.p90_ci
    assert lo < s.p90 < hi
    assert not LatencyStats.from_samples(x[:300]).p99_trustworthy


def test_p90_upper_bound_matches_latency_md_reference():
    # LATENCY.md: for n = 300 at 95%, the one-sided upper bound is about the 279th sorted sample.
    assert quantile_ci_ranks(300, 0.9, 0.95, sided="upper")[1] == 279


@pytest.mark.parametrize("n", [50, 200, 300, 1000])
def test_two_sided_interval_has_its_coverage(n):
    lo, hi = quantile_ci_ranks(n, 0.9, 0.95)
    if lo is None or hi is None:
        pytest.skip("interval open for this n")
    coverage = binom.cdf(hi - 1, n, 0.9) - binom.cdf(lo - 1, n, 0.9)
    assert coverage >= 0.95
    # moving the lower end inwards loses the coverage
    assert binom.cdf(hi - 1, n, 0.9) - binom.cdf(lo, n, 0.9) < coverage


def test_interval_is_open_when_too_few_samples():
    lo, hi = quantile_ci(np.sort(np.random.default_rng(0).random(10)), 0.9)
    assert hi == float("inf")


def test_empirical_coverage_of_p90_interval():
    rng = np.random.default_rng(1)
    true_p90 = np.log(1 / 0.1)  # exponential(1)
    hits = 0
    for _ in range(400):
        x = np.sort(rng.exponential(size=300))
        lo, hi = quantile_ci(x, 0.9, 0.95)
        hits += lo <= true_p90 <= hi
    assert hits / 400 >= 0.92


def test_stats_roundtrip_and_nan_refused():
    s = LatencyStats.from_samples([1.0, 2.0, 3.0])
    d = s.to_dict()
    assert d["p90_ci"][1] is None  # open upper bound serialises as null
    assert LatencyStats.from_dict(d).p50 == s.p50
    with pytest.raises(ValueError):
        LatencyStats.from_samples([1.0, float("nan")])


def test_make_inputs_fixed_and_typed():
    class S:
        input_names = ["a"]
        input_dtypes = [np.float16]

    a, b = make_inputs(S(), (1, 3, 4, 4)), make_inputs(S(), (1, 3, 4, 4))
    assert a.dtype == np.float16 and a.shape == (1, 3, 4, 4) and np.array_equal(a, b)


def test_atomic_write_leaves_usual_file_mode(tmp_path):
    import os
    import stat

    from edgekd.util_io import atomic_write_text

    p = atomic_write_text(tmp_path / "a.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind


def test_loads_split_the_samples_and_pool_them():
    clock = VirtualClock()
    # three loads of one model, each placed differently: 1.0, 1.2 and 1.1 ms per run
    loads = iter([FakeSession(clock, 9.0, lambda i: 1.2), FakeSession(clock, 9.0, lambda i: 1.1)])
    first = FakeSession(clock, 5.0, lambda i: 1.0)
    made = []

    def reload():
        made.append(next(loads))
        return made[-1]

    # warm-up: 30 ms on the first load (30 runs of 1 ms), 10 ms on the others (>= 10 runs)
    settings = MeasureSettings(warmup_s=0.03, warmup_iters=10, min_iters=90, min_time_s=0.0, sessions=3)
    m = measure_loads(first, reload, np.zeros(1, np.float32), settings, clock=clock)
    assert len(made) == 2 and all(s.closed for s in made) and not first.closed  # the caller's stays open
    assert first.calls == 1 + 30 + 30  # first run, the full warm-up, a third of the samples
    assert made[0].calls == made[1].calls == 1 + 10 + 30
    assert m.stats.n == 90 and m.first_inference_ms == pytest.approx(5.0)
    assert m.stats.p50 == pytest.approx(1.1) and m.stats.min == pytest.approx(1.0)
    assert m.stats.max == pytest.approx(1.2) and m.warmup_iters == 50


def test_one_load_or_no_reloader_is_plain_measure_session():
    clock = VirtualClock()
    s = FakeSession(clock, 5.0, lambda i: 1.0)
    settings = MeasureSettings(warmup_s=0.0, min_iters=50, min_time_s=0.0, sessions=3)
    m = measure_loads(s, None, np.zeros(1, np.float32), settings, clock=clock)
    assert m.stats.n == 50 and s.calls == 1 + 10 + 50


class DriftingSession(FakeSession):
    """A run costs ``base_ms`` plus what the machine's drift adds at that moment (the same for
    every session), and ``switch_ms`` more when another session ran just before (its data left
    the caches)."""

    last = None  # the session that ran last, shared by all

    def __init__(self, clock, base_ms, drift_ms_per_s=0.0, switch_ms=0.0):
        super().__init__(clock, base_ms, lambda i: base_ms)
        self.base_ms, self.drift, self.switch_ms = base_ms, drift_ms_per_s, switch_ms

    def run(self, x):
        ms = self.base_ms + self.drift * self.clock.ns / 1e9
        if DriftingSession.last is not None and DriftingSession.last is not self:
            ms += self.switch_ms
        DriftingSession.last = self
        self.calls += 1
        self.clock.ns += int(ms * 1e6)
        return [x]


def test_interleaved_difference_is_free_of_the_machines_drift():
    from edgekd.latency.measure import measure_interleaved

    settings = MeasureSettings(warmup_s=0.01, warmup_iters=10, min_iters=100, min_time_s=1.0)
    x = np.zeros(1, np.float32)
    # one after the other, a drift of 0.1 ms per second moves the difference by ~0.1 ms
    clock = VirtualClock()
    DriftingSession.last = None
    a, b = DriftingSession(clock, 1.0, 0.1), DriftingSession(clock, 0.6, 0.1)
    seq = measure_session(a, x, settings, clock=clock).stats.p50 - measure_session(b, x, settings, clock=clock).stats.p50
    assert seq < 0.4 - 0.05  # b ran later, on a slower machine
    # in alternating 5 ms slices both see the same drift; a slice's first run, slowed by the
    # other session (switch_ms), is not among the samples
    clock = VirtualClock()
    DriftingSession.last = None
    a, b = DriftingSession(clock, 1.0, 0.1, switch_ms=5.0), DriftingSession(clock, 0.6, 0.1, switch_ms=5.0)
    ma, mb = measure_interleaved([a, b], [x, x], settings, clock=clock)
    assert ma.stats.p50 - mb.stats.p50 == pytest.approx(0.4, abs=0.01)
    assert ma.stats.max < 5.0 and mb.stats.max < 5.0
    assert ma.stats.n >= 100 and mb.stats.n >= 100
    total_s = (ma.samples_ms.sum() + mb.samples_ms.sum()) / 1e3
    assert 1.0 <= total_s < 1.02  # min_time_s counts the samples of both, not each
    assert mb.stats.n / ma.stats.n == pytest.approx(1.0 / 0.6, rel=0.1)  # equal time each: slices, not runs


def test_loads_interleaved_reload_and_close_every_model():
    from edgekd.latency.measure import measure_loads_interleaved

    clock = VirtualClock()
    made = {"a": [], "b": []}

    def reload(name, ms):
        def make():
            made[name].append(FakeSession(clock, 2.0, lambda i: ms))
            return made[name][-1]
        return make

    first = [FakeSession(clock, 5.0, lambda i: 1.0), FakeSession(clock, 5.0, lambda i: 0.5)]
    settings = MeasureSettings(warmup_s=0.0, warmup_iters=10, min_iters=60, min_time_s=0.0, sessions=3)
    ma, mb = measure_loads_interleaved(first, [reload("a", 1.2), reload("b", 0.7)], [np.zeros(1)] * 2,
                                       settings, clock=clock)
    assert len(made["a"]) == len(made["b"]) == 2 and all(s.closed for v in made.values() for s in v)
    assert not any(s.closed for s in first)  # the caller's stay open
    assert ma.stats.n >= 60 and mb.stats.n >= 60 and ma.first_inference_ms == pytest.approx(5.0)
    assert ma.stats.min == pytest.approx(1.0) and ma.stats.max == pytest.approx(1.2)
    assert mb.stats.min == pytest.approx(0.5) and mb.stats.max == pytest.approx(0.7)


def test_a_held_session_stays_through_every_load_of_the_others():
    from edgekd.latency.measure import measure_loads_interleaved

    clock = VirtualClock()
    made = []

    def reload():
        made.append(FakeSession(clock, 2.0, lambda i: 1.2))
        return made[-1]

    model, reference = FakeSession(clock, 5.0, lambda i: 1.0), FakeSession(clock, 5.0, lambda i: 0.5)
    settings = MeasureSettings(warmup_s=0.0, warmup_iters=10, min_iters=60, min_time_s=0.0, sessions=3)
    mm, mr = measure_loads_interleaved([model, reference], [reload, None], [np.zeros(1)] * 2, settings,
                                       clock=clock)
    assert len(made) == 2 and all(s.closed for s in made)  # the model: loaded twice more, closed
    assert not reference.closed and not model.closed
    assert mm.stats.max == pytest.approx(1.2) and mr.stats.min == mr.stats.max == pytest.approx(0.5)
    assert mr.stats.n >= 60  # the reference measured alongside every load
    # nothing to reload: one plain alternated measurement
    m1, r1 = measure_loads_interleaved([model, reference], [None, None], [np.zeros(1)] * 2, settings,
                                       clock=clock)
    assert len(made) == 2 and m1.stats.min == m1.stats.max == pytest.approx(1.0)
