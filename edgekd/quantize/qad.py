"""Quantization-aware distillation (QAD): when post-training INT8 costs accuracy, fine-tune the
student with fake quantization and a distillation loss from the teacher, then export the same
INT8 graph the runtime reads.

    qad_model(student, teacher, bundle, target, out_dir, ...) -> QadReport
    qad_ref(model_ref, target, data_spec, out_dir, teacher_spec=..., ...) -> QadReport
    prepare_qat(student, qdq_path, calib_x) -> Prepared (the fake-quant student and its map)

Steps: BatchNorm folded into the convolutions (the INT8 graph quantizes folded weights); PTQ
through the target's backend exactly as `edgekd quantize` does; if the top-1 drop exceeds
``max_drop`` (``qat="auto"``) or always (``qat="always"``): the target's QDQ graph says where
the fake quantizers go (qad_graph), the student is fine-tuned with them by ``distill()`` (any KD
loss, labels optional, the teacher-logit cache, checkpoints and ``resume``), its weights are
written back into that same graph, and the usual checks run: accuracy and latency through the
runtime against fp32, the faster-than-fp32 guard, and parity of the runtime against the
fake-quantized torch model. The better of PTQ and QAD (by runtime accuracy) is kept.

OpenVINO: ONNX Runtime's QDQ graph is the placement and the export; OpenVINO reads QDQ ONNX
and builds its INT8 IR from it (docs/QAD.md has the measurements behind that choice).
"""
from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import BadInputError, VerdictError
from ..targets import TargetSpec

QAT_MODES = ("auto", "off", "always")
DEFAULT_MAX_DROP = 0.01  # qat="auto" without max_drop: one point
# BatchNorm is folded before fine-tuning, so nothing normalizes the student any more: one batch
# with a large KD gradient can blow a narrow student up (a width-4 convnet on the RGB task went to
# chance within an epoch at SGD 0.005), so the global gradient norm is clipped unless told.
DEFAULT_GRAD_CLIP = 5.0
PARITY_MIN_COSINE = 0.95


@dataclass
class Prepared:
    model: Any          # the fake-quant torch.fx GraphModule
    plan: Any           # qad_graph.QdqPlan
    placement: Any      # qad_graph.Placement
    qdq_path: Path      # the graph it mirrors


@dataclass
class QadReport:
    """PTQ and (when it ran) QAD on one target, and which one was kept."""

    target: str
    ptq: Any                        # QuantReport
    qad: Any = None                 # QuantReport when QAD ran
    chosen: str = "ptq"
    reason: str = ""
    train: dict = field(default_factory=dict)
    parity: Optional[dict] = None
    placement: dict = field(default_factory=dict)
    kept: bool = False
    artifact: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def final(self):
        return self.qad if self.chosen == "qad" else self.ptq

    def to_dict(self) -> dict:
        return {"target": self.target, "chosen": self.chosen, "reason": self.reason,
                "ptq": self.ptq.to_dict(), "qad": self.qad.to_dict() if self.qad else None,
                "train": self.train, "parity": self.parity, "placement": self.placement,
                "kept": self.kept,
                "artifact": self.artifact.to_dict() if self.artifact is not None else None,
                "notes": list(self.notes)}


def check_options(qat: str, epochs: int, loss: str, teacher) -> None:
    """The bad inputs that need nothing loaded (one line each)."""
    if qat not in QAT_MODES:
        raise BadInputError(f"--qat {qat!r} is not one of {', '.join(QAT_MODES)}")
    if qat == "always" and epochs < 1:
        raise BadInputError(f"--qat always with --qat-epochs {epochs} trains nothing",
                            hint="give --qat-epochs 1 or more, or use --qat off")
    if epochs < 0:
        raise BadInputError(f"--qat-epochs {epochs} must be 0 or more")
    if qat != "off" and epochs > 0 and loss != "ce" and teacher is None:
        raise BadInputError(f"quantization-aware distillation with --loss {loss} needs a teacher",
                            hint="pass --teacher, use --loss ce (labels only), or --qat off")


def prepare_qat(student, qdq_path: "str | Path", calib_x: np.ndarray) -> Prepared:
    """The student (BatchNorm folded, as traced by fold_batchnorm) with fake quantizers where
    the QDQ graph at ``qdq_path`` quantizes; ``calib_x`` is a calibration batch for matching."""
    import torch

    from .qad_graph import match, read_plan, trained_parameters
    from .qad_torch import drop_repeats, fold_batchnorm, insert_fake_quant, split_matmul_bias

    x = np.ascontiguousarray(calib_x, np.float32)
    gm = copy.deepcopy(student) if hasattr(student, "graph") else fold_batchnorm(student)
    gm = split_matmul_bias(gm, torch.from_numpy(x[:2]))
    plan = read_plan(qdq_path)
    placement = match(plan, qdq_path, gm, x)
    acts = {placement.acts[a.tensor]: (a.scale, a.zero_point, a.qmin, a.qmax) for a in plan.acts}
    qgm = insert_fake_quant(gm, drop_repeats(gm, acts), set(placement.weights.values()))
    trained = trained_parameters(plan, placement)
    for name, p in qgm.named_parameters():
        p.requires_grad_(name in trained)
    return Prepared(model=qgm, plan=plan, placement=placement, qdq_path=Path(qdq_path))


def _placement_graph(spec: TargetSpec, fp32: Path, ptq_art, calib, work: Path) -> Path:
    """The QDQ graph the fake quantizers mirror: the PTQ artifact itself for ONNX Runtime and
    TensorRT, ONNX Runtime's QDQ graph (what OpenVINO converts) for OpenVINO."""
    from ..backends.onnxruntime_quant import (default_activation_type, quantize_for_tensorrt,
                                              quantize_onnx_static)

    dst = work / "placement.int8.onnx"
    if dst.is_file():  # resuming: the graph the saved training state was prepared on
        return dst
    if spec.runtime.value in ("onnxruntime", "tensorrt") and str(ptq_art.path).endswith(".onnx"):
        shutil.copyfile(ptq_art.path, dst)
        return dst
    if spec.runtime.value == "tensorrt":
        return quantize_for_tensorrt(fp32, dst, calib)
    return quantize_onnx_static(fp32, dst, calib, activation_type=default_activation_type())


def _artifact(spec: TargetSpec, qdq: Path, out: Path):
    """The target's artifact built from the QAD QDQ graph."""
    from ..backends import require_backend
    from ..backends.base import Artifact, ArtifactFormat

    if spec.runtime.value == "onnxruntime":
        return Artifact.from_file(qdq, ArtifactFormat.ONNX, target=spec.name, precision="int8",
                                  meta={"quantizer": "edgekd.qad", "format": "QDQ"})
    art = require_backend(spec).build(qdq, spec, out)
    return replace(art, meta={**dict(art.meta), "quantizer": "edgekd.qad", "source": str(qdq)})


def qad_model(student, teacher, bundle, target: "str | TargetSpec", out_dir: "str | Path", *,
              qat: str = "auto", epochs: int = 3, loss: str = "kd",
              loss_options: Optional[dict] = None, train_kw: Optional[dict] = None,
              calib_size: int = 300, val_size: Optional[int] = None, max_drop: Optional[float] = None,
              force: bool = False, rounds: int = 3, method: str = "minmax",
              preset: str = "performance", resume: bool = False, seed: int = 0,
              progress: bool = False) -> QadReport:
    """PTQ, then QAD when it is needed (see the module docstring) for a torch ``student`` on a
    DataBundle; the kept artifact and ``<stem>.int8.quant.json`` land in ``out_dir``;
    ``out_dir/qad/`` holds the training run (``resume=True`` continues it after a kill)."""
    import torch

    from ..data import calibration_from_dataset, dataset_arrays
    from ..distill.run import distill
    from ..export import check_parity, export_onnx
    from . import check_runtime, compared, keep_or_refuse, quantize_model, require_int8_target
    from .qad_graph import quantized_ops, write_weights
    from .qad_torch import fold_batchnorm

    spec = require_int8_target(target)
    check_runtime(spec, evaluate=True)
    check_options(qat, epochs, loss, teacher)
    if max_drop is not None and not 0.0 <= max_drop < 1.0:
        raise BadInputError(f"--max-drop {max_drop} must be in [0, 1) (0.01 = one point)")
    _check_classes(student, teacher, bundle)
    out_dir = Path(out_dir)
    work = out_dir / "qad"
    if not resume:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    gm = fold_batchnorm(student) if qat != "off" else student
    calib = calibration_from_dataset(bundle.train, calib_size, batch_size=32, seed=seed)
    if not calib:
        raise BadInputError(f"calibration set is empty (--calib-size {calib_size})",
                            hint="use --calib-size of at least 1")
    x_val, y_val = dataset_arrays(bundle.val, val_size, seed=seed)
    if len(x_val) == 0:
        raise BadInputError("the data has no labelled validation samples",
                            hint="give data with a validation split")
    with tempfile.TemporaryDirectory(prefix=".edgekd-qad-", dir=out_dir) as staging:
        stage = Path(staging)
        sample = torch.from_numpy(calib[0][:1])
        fp32 = export_onnx(gm, sample, stage / "student.onnx", dynamic_batch=True)
        ptq = quantize_model(fp32, spec, stage / "ptq", calib, (x_val, y_val), method=method,
                             max_drop=max_drop, force=True, rounds=rounds, preset=preset)
        threshold = DEFAULT_MAX_DROP if max_drop is None else max_drop
        drop = ptq.accuracy_drop or 0.0
        rep = QadReport(target=spec.name, ptq=ptq)
        run = epochs > 0 and (qat == "always" or (qat == "auto" and drop > threshold + 1e-12))
        rep.reason = ("--qat always" if qat == "always" else
                      f"PTQ dropped {drop * 100:.2f} points, more than {threshold * 100:.2f}"
                      if run else f"--qat {qat}" if qat == "off" or epochs == 0 else
                      f"PTQ dropped {drop * 100:.2f} points, within {threshold * 100:.2f}")
        if run:
            qdq = _placement_graph(spec, fp32, ptq.artifact, calib, work)
            prep = prepare_qat(gm, qdq, np.concatenate(calib)[:64])
            cfg = {"epochs": epochs, "seed": seed, **dict(train_kw or {})}
            cfg.setdefault("lr", 0.005 if cfg.get("optimizer", "sgd") == "sgd" else 2e-4)
            if cfg.get("grad_clip") is None:
                cfg["grad_clip"] = DEFAULT_GRAD_CLIP
            result = distill(prep.model, teacher if loss != "ce" else None, bundle, work,
                             config=cfg, loss=loss, loss_options=loss_options, resume=resume,
                             progress=progress, log_json=True)
            qmodel = result.model
            hist = result.history
            rep.train = {"epochs": len(hist), "best_epoch": result.best_epoch, "loss": loss,
                         "fake_quant_val_acc": result.best_acc, "cache": result.cache,
                         "epoch_cpu_s": [h.get("train_cpu_s") for h in hist],
                         "epoch_time_s": [h.get("train_time_s") for h in hist],
                         "lr": result.config.lr if result.config else None,
                         "grad_clip": result.config.grad_clip if result.config else None}
            qad_onnx = write_weights(prep.plan, prep.placement, qmodel, qdq,
                                     stage / "qad" / f"{fp32.stem}.int8.onnx")
            rep.placement = {"activations": len(prep.plan.acts), "weights": len(prep.plan.weights),
                             "quantized_ops": quantized_ops(qad_onnx)}
            # integer kernels and fake quantization round a few ties differently and a narrow
            # student amplifies them: held to agreeing logits (cosine), not to exact values
            parity = check_parity(qmodel, qad_onnx, torch.from_numpy(x_val[:256]),
                                  check_values=False, min_top1=0.0, raise_on_fail=False)
            rep.parity = {**parity.to_dict(), "min_cosine": PARITY_MIN_COSINE,
                          "passed": parity.cosine >= PARITY_MIN_COSINE}
            if not rep.parity["passed"]:
                raise VerdictError(f"the QAD INT8 graph does not reproduce the fake-quantized "
                                   f"student: {parity.one_line()}", hint="use --qat off")
            art = _artifact(spec, qad_onnx, stage / "qad-art")
            rep.qad = compared(fp32, art, spec, x_val, y_val, stage / "fp32-qad", method=f"qad:{loss}",
                               calib_samples=ptq.calib_samples, force=force, rounds=rounds)
            rep.qad.artifact = art
            i8 = rep.qad.int8
            if (i8.accuracy or 0.0) >= (ptq.int8.accuracy or 0.0):
                rep.chosen = "qad"
            else:
                rep.notes.append(f"QAD reached {i8.accuracy:.4f} top-1 through the runtime, below "
                                 f"PTQ's {ptq.int8.accuracy:.4f}: PTQ kept")
        keep_or_refuse(rep, rep.final, rep.final.artifact, out_dir, max_drop=max_drop, force=force)
    return rep


def _check_classes(student, teacher, bundle) -> None:
    import torch

    x = torch.stack([bundle.val[i][0] for i in range(min(2, len(bundle.val)))])
    with torch.no_grad():
        out = student.eval()(x)
    n = int((out[0] if isinstance(out, (tuple, list)) else out).shape[-1])
    if n != int(bundle.num_classes):
        raise BadInputError(f"the student predicts {n} classes but the data has "
                            f"{bundle.num_classes}", hint="give the data the student was trained on")
    if teacher is not None:
        from ..models.teacher import check_teacher_matches

        check_teacher_matches(teacher, bundle)


def qad_ref(model_ref: "str | Path", target: "str | TargetSpec", data_spec: str,
            out_dir: "str | Path", *, teacher_spec: Optional[str] = None,
            teacher_weights: Optional[str] = None, trust_code: bool = False,
            labelled_fraction: float = 1.0, seed: int = 0, **kw) -> QadReport:
    """`edgekd quantize --qat auto|always`: an edgekd checkpoint (the student as a torch module)
    quantized for an int8 ``target``; ``kw`` as for qad_model."""
    from ..deploy import check_ref_manifest
    from ..models.ref import load_module, parse_ref

    check_options(kw.get("qat", "auto"), kw.get("epochs", 3), kw.get("loss", "kd"),
                  teacher_spec)
    ref = parse_ref(model_ref)
    if ref.kind != "torch":
        raise BadInputError(f"quantization-aware distillation fine-tunes a torch student; "
                            f"'{model_ref}' is not an edgekd checkpoint",
                            hint="give the student's .pt checkpoint, or use --qat off")
    check_ref_manifest(model_ref)
    student, shape = load_module(ref, what="quantize", trust=trust_code)
    from ..data import load_data

    bundle = load_data(data_spec, resolution=int(shape[-1]), seed=seed,
                       labelled_fraction=labelled_fraction)
    teacher = None
    if teacher_spec and kw.get("loss", "kd") != "ce":
        from ..models.teacher import load_teacher

        teacher = load_teacher(teacher_spec, weights=teacher_weights, trust_pickle=trust_code,
                               num_classes=bundle.num_classes, in_channels=bundle.in_channels)
    return qad_model(student, teacher, bundle, target, out_dir, seed=seed, **kw)
