"""Verification of a built artifact on its target: accuracy through the target's runtime on the
validation set, parity against the torch student, and latency per docs/LATENCY.md.

A target with ``remote:`` is verified on its device, all three checks (verify/remote.py);
the report then carries ``remote`` (how the device was reached) and the device's fingerprint.

Latency is judged on the p90's order-statistic confidence interval: PASS when its upper bound
is at or under the budget, FAIL when its lower bound is over it; in between the run is
re-measured once with the samples pooled, and what is still undecided is INCONCLUSIVE.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..accuracy import check_fits_data
from ..errors import BadInputError
from ..latency.stats import LatencyStats
from .report import FAIL, INCONCLUSIVE, PASS, Check, VerifyReport, check, latency_verdict  # noqa: F401


def _val_arrays(bundle) -> tuple[np.ndarray, np.ndarray]:
    from ..data.arrays import dataset_arrays

    x, y = dataset_arrays(bundle.val)
    if len(x) == 0:
        raise BadInputError(f"data '{bundle.name}' has no labelled validation samples",
                            hint="give data with a validation split")
    return x, y


def _reference_module(reference):
    if reference is None:
        return None
    if isinstance(reference, (str, Path)):
        from ..models.checkpoint import load_checkpoint

        p = Path(reference)
        if not p.is_file():
            raise BadInputError(f"--reference {p} does not exist", hint="give the student.pt checkpoint")
        module, _ = load_checkpoint(p)
        return module
    return reference.eval()


def _torch_accuracy(module, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    from ..accuracy import top1

    with torch.no_grad():
        return top1(lambda xb: module(torch.from_numpy(xb)), x, y, batch=256)


def verify_artifact(artifact: "str | Path", target, data, *, budget_ms: float | None = None,
                    min_accuracy: float | None = None, max_drop: float | None = None,
                    reference=None, metric: str = "p90", resolution: int | None = None,
                    settings=None, check_manifest: bool = True, parity_samples: int = 64,
                    work_dir: "str | Path | None" = None, max_size_kb: float | None = None,
                    max_peak_mb: float | None = None) -> VerifyReport:
    """Verify ``artifact`` on ``target`` with the validation split of ``data`` (a spec or a
    DataBundle). ``reference`` (a student.pt path or a torch module) adds a parity check and is
    the baseline of ``max_drop`` (an absolute drop in top-1, e.g. 0.01). Refuses (BadInputError)
    an artifact that no longer matches the manifest.json beside it. ``max_size_kb`` and
    ``max_peak_mb`` are memory budgets (latency.memory: the artifact's size, the peak memory of
    one inference)."""
    from ..deploy import check_ref_manifest, open_model
    from ..export import check_parity
    from ..latency.bench import measure_session_drift
    from ..latency.measure import environment_fingerprint, make_inputs, measure_session
    from ..latency.memory import budget_results, check_budget_values, measure_memory
    from ..quantize.evaluate import top1_accuracy
    from ..targets import Precision, load_target

    spec = load_target(target)
    art = Path(artifact)
    if not art.is_file():
        raise BadInputError(f"artifact {art} does not exist", hint="check the path")
    if budget_ms is not None and not budget_ms > 0:
        raise BadInputError(f"--budget-ms {budget_ms} must be a positive number of milliseconds")
    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise BadInputError(f"--min-accuracy {min_accuracy} must be a fraction in [0, 1]")
    if max_drop is not None and reference is None:
        raise BadInputError("--max-drop needs --reference (the torch student to compare with)")
    if resolution is not None and not resolution > 0:
        raise BadInputError(f"--resolution {resolution} must be a positive number of pixels",
                            hint="leave it out to use the artifact's input size")
    check_budget_values(max_size_kb, max_peak_mb)
    mpath = check_ref_manifest(art) if check_manifest else None
    if check_manifest and isinstance(reference, (str, Path)) and Path(reference).is_file():
        check_ref_manifest(reference)  # the torch student beside it, as listed there

    if isinstance(data, str):
        from ..data import load_data

        bundle = load_data(data, resolution=resolution or _artifact_resolution(art))
    else:
        bundle = data
    check_fits_data(str(art), bundle.name, bundle.num_classes)  # a one-class dataset scores nothing
    x, y = _val_arrays(bundle)
    if spec.remote is not None:  # accuracy, parity and latency on the device itself, over SSH
        from .remote import remote_verify

        return remote_verify(art, spec, x, y, manifest=mpath, budget_ms=budget_ms, min_accuracy=min_accuracy,
                             max_drop=max_drop, reference=reference, metric=metric, settings=settings,
                             max_size_kb=max_size_kb, max_peak_mb=max_peak_mb)
    mem_tmp = None
    if work_dir is None and (max_size_kb is not None or max_peak_mb is not None):
        import tempfile  # the built artifact must outlive the load: memory loads it afresh

        mem_tmp = tempfile.TemporaryDirectory(prefix="edgekd-verify-")
        work_dir = mem_tmp.name
    opened = open_model(art, spec, work_dir=Path(work_dir) if work_dir else None,
                        sample_shape=tuple(bundle.input_shape))
    session = opened.session
    mem = None
    try:
        _check_model_fits(art, opened, bundle, x)
        acc = top1_accuracy(session, x, y, batch=spec.batch)
        module = _reference_module(reference)
        parity = ref_acc = None
        if module is not None:
            n = min(parity_samples, len(x))
            exact = spec.precision == Precision.fp32
            parity = check_parity(module, session, x[:n], check_values=exact,
                                  min_top1=0.99 if exact else 0.9, raise_on_fail=False).to_dict()
            ref_acc = _torch_accuracy(module, x, y)
        shape = tuple(opened.input_shape)
        inputs = make_inputs(session, shape)
        env = environment_fingerprint(spec, session, shape)
        settings = settings or spec.measure
        m, drift, corrected = measure_session_drift(session, inputs, spec, settings, environment=env)
        stats, samples = m.stats, m.samples_ms
        if corrected is None and budget_ms is not None and latency_verdict(stats, budget_ms, metric) == INCONCLUSIVE:
            m2 = measure_session(session, inputs, settings, environment=env)
            samples = np.concatenate([samples, m2.samples_ms])
            stats = LatencyStats.from_samples(samples, warmup=stats.warmup,
                                              confidence=settings.confidence,
                                              unstable_iqr=settings.unstable_iqr, environment=env)
        if max_size_kb is not None or max_peak_mb is not None:
            mem = measure_memory(opened.artifact, spec, shape)
    finally:
        close = getattr(session, "close", None)
        if close:
            close()
        if mem_tmp is not None:
            mem_tmp.cleanup()

    checks: list[Check] = []
    if budget_ms is not None:
        judged = corrected if corrected is not None else stats  # drift-corrected with a calibration
        v = latency_verdict(judged, budget_ms, metric)
        lo, hi = judged.p90_ci
        checks.append(Check("latency", v, judged.metric(metric), budget_ms,
                            f"{metric} {judged.metric(metric):.4f} ms, 95% CI of p90 "
                            f"[{lo:.4f}, {hi:.4f}] ms vs budget {budget_ms:g} ms"
                            + (f" (drift-corrected, speed factor {drift.factor:.3f}; raw {metric} "
                               f"{stats.metric(metric):.4f} ms)" if drift is not None else "")))
    if min_accuracy is not None:
        checks.append(Check("accuracy", check(acc >= min_accuracy), acc, min_accuracy,
                            f"top-1 {acc:.4f} vs minimum {min_accuracy:.4f}"))
    if max_drop is not None and ref_acc is not None:
        drop = ref_acc - acc
        checks.append(Check("accuracy_drop", check(drop <= max_drop + 1e-12), drop, max_drop,
                            f"drop {drop:+.4f} from the torch reference's {ref_acc:.4f}"))
    for name, ok, value, limit, detail in (budget_results(mem, max_size_kb, max_peak_mb) if mem else []):
        checks.append(Check(name, INCONCLUSIVE if ok is None else check(ok), value, limit, detail))
    if parity is not None:
        checks.append(Check("parity", check(parity["passed"]), parity["top1_agreement"],
                            parity["min_top1"], f"max|diff| {parity['max_abs_diff']:.3g}, cosine "
                            f"{parity['cosine']:.6f}, top-1 agreement {parity['top1_agreement']:.4f}"))
    return VerifyReport(artifact=str(art), artifact_sha256=opened.artifact.sha256, target=spec.name,
                        accuracy=float(acc), n_val=len(x), latency=stats, metric=metric,
                        budget_ms=budget_ms, reference_accuracy=ref_acc, parity=parity, checks=checks,
                        samples_ms=samples, first_inference_ms=m.first_inference_ms,
                        manifest=str(mpath) if mpath else None)


def _check_model_fits(art: Path, opened, bundle, x: np.ndarray) -> None:
    """The artifact takes the data's samples and gives one logit per class of the data."""
    from ..export import run_batched

    shape = tuple(opened.input_shape)
    check_fits_data(str(art), bundle.name, bundle.num_classes, sample_shape=x.shape[1:], model_shape=shape[1:])
    out = np.asarray(run_batched(opened.session, np.ascontiguousarray(x[:max(1, shape[0])])))
    check_fits_data(str(art), bundle.name, bundle.num_classes, outputs=out.reshape(len(out), -1).shape[1])


def ir_input_shape(xml: Path) -> tuple:
    """The first input's shape of an OpenVINO IR, read by the runtime (its partial shape): ints
    for static dimensions, None for dynamic ones ('?', ranges); () without openvino."""
    from ..backends._common import import_openvino
    from ..errors import EdgeKDError

    try:
        ov = import_openvino()
    except EdgeKDError:
        return ()
    model = ov.Core().read_model(str(xml))
    ps = model.inputs[0].get_partial_shape()
    if ps.rank.is_dynamic:
        return ()
    return tuple(d.get_length() if d.is_static else None for d in ps)


def _artifact_resolution(art: Path) -> int | None:
    """The square input size the artifact declares (ONNX, OpenVINO IR or ExecuTorch .pte), if static."""
    try:
        if art.suffix.lower() == ".onnx":
            from ..backends.calib import onnx_input_info

            _, shape = onnx_input_info(art)
        elif art.suffix.lower() == ".xml":
            shape = ir_input_shape(art)
        elif art.suffix.lower() == ".pte":
            from ..backends.executorch import pte_input_shape

            shape = pte_input_shape(art)
        else:
            return None
    except Exception:  # noqa: BLE001 - a file that does not parse (protobuf DecodeError, ...) is
        return None    # reported by whatever loads it next, with its own message
    if len(shape) == 4 and isinstance(shape[-1], int) and shape[-1] > 0 and shape[-1] == shape[-2]:
        return int(shape[-1])
    return None
