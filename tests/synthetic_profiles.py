"""Synthetic latency profiles with exact values, shared by the predictor, select and gate tests
(tests/ is on sys.path under pytest: its conftest.py sits there)."""
from edgekd.latency.profile import BlockEntry, ModelEntry, Profile
from edgekd.latency.stats import LatencyStats


def const(ms: float, spread: float = 0.0) -> LatencyStats:
    """Stats whose p50 is ``ms`` and p90 is ``ms + spread`` (ten samples)."""
    return LatencyStats.from_samples([ms] * 5 + [ms + spread] * 5) if spread else LatencyStats.from_samples([ms] * 10)


def synthetic(true_a=2.0, true_b=0.05, overhead=0.01, distort=None) -> Profile:
    """Blocks of net latency 0.1, 0.2, 0.3 ms; models latency = a*sum(net) + b exactly."""
    prof = Profile(target={"name": "ort-cpu"}, family="fam", grid=[])
    prof.overhead = const(overhead)
    net = {"A": 0.1, "B": 0.2, "C": 0.3}
    for k, v in net.items():
        prof.blocks[k] = BlockEntry(key=k, signature={"key": k}, latency=const(v + overhead))
    combos = [("A",), ("A", "B"), ("A", "A", "B"), ("B", "C"), ("A", "B", "C"), ("C", "C", "C")]
    for i, keys in enumerate(combos):
        y = true_a * sum(net[k] for k in keys) + true_b
        if distort and i in distort:
            y *= distort[i]
        spec = f"fam:i={i}"
        prof.models.append(ModelEntry(family="fam", spec=spec, params=100 * (i + 1), macs=1000 * (i + 1),
                                      blocks=keys, latency=const(y)))
        prof.grid.append(spec)
    return prof
