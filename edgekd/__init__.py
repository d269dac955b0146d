"""edgekd: distill, prune, quantize and export a student that meets a latency budget on a target.

The public API is listed here explicitly and loaded lazily, so ``import edgekd`` stays cheap
(no torch, no runtimes) until a name is used.
"""
from __future__ import annotations

from ._lazy import lazy_api
from ._version import __version__

# public name -> "module:attr" (relative to edgekd)
_API: dict[str, str] = {
    # errors
    "EdgeKDError": "errors:EdgeKDError",
    "BadInputError": "errors:BadInputError",
    "VerdictError": "errors:VerdictError",
    "InconclusiveError": "errors:InconclusiveError",
    "RuntimeMissingError": "errors:RuntimeMissingError",
    # targets
    "TargetSpec": "targets:TargetSpec",
    "load_target": "targets:load_target",
    "list_targets": "targets:list_targets",
    # budgets: metrics and the one verdict rule
    "Metric": "verdict:Metric",
    "Verdict": "verdict:Verdict",
    # backends, and model references opened for a target
    "Artifact": "backends.base:Artifact",
    "get_backend": "backends:get_backend",
    "parse_ref": "models.ref:parse_ref",
    "trust_code": "models.ref:trust_code",
    "open_model": "deploy:open_model",
    "export_ref": "deploy:export_ref",
    # latency
    "LatencyStats": "latency.stats:LatencyStats",
    "measure_latency": "latency.measure:measure_latency",
    "bench": "latency.bench:bench",
    "load_profile": "latency.profile:load_profile",
    "profile_family": "latency.profile:profile_family",
    "predict_latency": "latency.predict:predict",
    "select_student": "latency.select:select_student",
    # remote targets (SSH) and target checks
    "remote_bench": "remote.ops:remote_bench",
    "run_remote_edgekd": "remote.ops:run_edgekd",
    "doctor": "remote.doctor:doctor",
    # CI gate
    "decide": "gate:decide",
    "gate_one": "gate:gate_one",
    "Budget": "config:Budget",
    "load_budgets": "config:load_budgets",
    # distillation losses and criterion
    "build_criterion": "distill.criterion:build_criterion",
    "FeatureTaps": "distill.taps:FeatureTaps",
    "LOSSES": "distill.losses:LOSSES",
    # training: loop, checkpoints, resume, DDP, teacher-logit cache
    "TrainConfig": "distill.trainer:TrainConfig",
    "TrainResult": "distill.trainer:TrainResult",
    "fit": "distill.trainer:fit",
    "teacher_logit_cache": "distill.cache:teacher_logit_cache",
    # data, teachers, checkpoints
    "DataBundle": "data:DataBundle",
    "load_data": "data:load_data",
    "make_loader": "data:make_loader",
    "calibration_batches": "data:calibration_batches",
    "Teacher": "models.teacher:Teacher",
    "load_teacher": "models.teacher:load_teacher",
    "check_teacher_matches": "models.teacher:check_teacher_matches",
    "save_checkpoint": "models.checkpoint:save_checkpoint",
    "load_checkpoint": "models.checkpoint:load_checkpoint",
    # structured pruning
    "prune_model": "prune:prune_model",
    "prune_to_budget": "prune:prune_to_budget",
    "PruneResult": "prune:PruneResult",
    "save_pruned": "prune:save_pruned",
    "load_pruned": "prune:load_pruned",
    # export
    "export_onnx": "export:export_onnx",
    "check_parity": "export:check_parity",
    "export_for_target": "export:export_for_target",
    # quantization
    "quantize_for_target": "quantize:quantize_for_target",
    "quantize_model": "quantize:quantize_model",
    "quantize_onnx_static": "backends.onnxruntime_quant:quantize_onnx_static",
    "quantize_openvino": "backends.openvino_quant:quantize_openvino",
    "QuantReport": "quantize.evaluate:QuantReport",
    # one-shot pipeline, verification, reports
    "CompressConfig": "pipeline:CompressConfig",
    "compress": "pipeline:compress",
    "make_plan": "pipeline:make_plan",
    "verify_artifact": "verify:verify_artifact",
    "VerifyReport": "verify:VerifyReport",
    "write_reports": "report:write_reports",
    # student models
    "StudentConfig": "models:StudentConfig",
    "parse_spec": "models:parse_spec",
    "build_model": "models:build_model",
    "input_shape": "models:input_shape",
    "count_macs_params": "models:count_macs_params",
    "family_names": "models:family_names",
    "family_grid": "models:family_grid",
    "block_signatures": "models:block_signatures",
    "build_block": "models:build_block",
}


__getattr__, __dir__ = lazy_api(__name__, _API, globals(), extra=("__version__",))


__all__ = sorted(_API) + ["__version__"]
