"""CompressConfig: everything that decides what compress() makes, validated at load.

The pipeline's defaults live here and nowhere else: the config's field defaults, the student
family used when no profile applies, and how far under the budget pruning aims.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BadInputError

DEFAULT_FAMILY = "convnet"  # --family auto without a usable profile here
PRUNE_MARGIN = 0.05  # pruning aims this far under the budget: verify wants the p90 interval within it

# The budget's statistic: the two of edgekd.verdict.Metric a compress budget may name. A Literal,
# not the Metric enum: cfg.metric stays a plain str (state.json, the digest and error messages
# are unchanged) and pydantic names exactly these two when another is given.
BudgetMetric = Literal["p50", "p90"]  # edgekd.verdict.PREDICTED_METRICS, spelled out for pydantic


class CompressConfig(BaseModel):
    """Everything that decides what compress() makes. Defaults live here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher: str = Field(description="an edgekd checkpoint, TorchScript/.pt2/ONNX file, hf:DIR, py:module:function "
                               "or a model spec (with teacher_weights)")
    teacher_weights: Optional[str] = Field(None, description="state dict for a teacher given as a model spec")
    trust_pickle: bool = Field(False, description="allow model files that run code (pickles, TorchScript, .pt2)")
    data: str = Field(description="digits, shapes[:knobs], folder:DIR, npz:FILE or py:module:function")
    resolution: Optional[int] = Field(None, ge=4, description="resize images to N x N (None: the teacher's "
                                      "input size, else the data's)")
    target: str = Field(description="a target name (`edgekd targets`) or a target YAML path")
    budget_ms: float = Field(gt=0, description="latency budget in milliseconds")
    metric: BudgetMetric = Field("p90", description="the latency statistic the budget applies to")
    student: str = Field("auto", description="'auto' (select from the target's profile) or a student spec")
    family: str = Field("auto", description="student family for student: auto ('auto': one with a profile here)")
    grid: str = Field("small", description="grid to profile when no profile applies: small, default or a file")
    rank: Optional[Literal["macs", "params"]] = Field(
        None, description="capacity order for picking the student: macs (then params) or params (then macs); "
                          "None: the family's own (macs for hf- families, params for edgekd's)")
    loss: str = Field("kd", description="distillation loss (docs/METHODS.md)")
    loss_options: dict[str, Union[bool, int, float, str]] = Field(
        default_factory=dict, description="the loss's options, e.g. {temperature: 4, w_kd: 0.9} (docs/METHODS.md)")
    prune: Literal["auto", "off"] = Field("auto", description="auto: prune when the distilled student misses "
                                          "the budget; off: never")
    quantize: Literal["int8", "fp16", "off"] = Field("off", description="int8: through the target's -int8 twin, "
                                                     "kept only when faster")
    qat: Literal["auto", "off", "always"] = Field("off", description="with quantize int8: quantization-aware "
                                                  "distillation when the INT8 top-1 drop exceeds max_drop (0.01 "
                                                  "when unset): auto; always; or off (docs/QAD.md)")
    qat_epochs: int = Field(3, ge=0, description="quantization-aware distillation epochs")
    epochs: int = Field(10, ge=1, description="distillation epochs")
    batch_size: int = Field(64, ge=2, description="training batch size")
    lr: Optional[float] = Field(None, gt=0, description="peak learning rate (None: the optimizer's default)")
    seed: int = Field(0, ge=0, description="random seed")
    min_accuracy: Optional[float] = Field(None, ge=0, le=1, description="require this top-1 accuracy on the target")
    max_drop: Optional[float] = Field(None, ge=0, le=1, description="require at most this top-1 drop from the "
                                      "torch student")
    profile_min_time_s: float = Field(0.3, ge=0, description="timing per candidate when profiling")
    prune_epochs: Optional[int] = Field(None, ge=0, description="KD fine-tuning epochs after pruning "
                                        "(None: max(2, epochs // 2))")
    max_size_kb: Optional[float] = Field(None, gt=0, description="size budget (KB) of the shipped artifact: "
                                         "select excludes candidates estimated over it, verify measures it")
    max_peak_mb: Optional[float] = Field(None, gt=0, description="peak memory budget (MB) of one inference, "
                                         "measured by verify")

    @property
    def finetune_epochs(self) -> int:
        return self.prune_epochs if self.prune_epochs is not None else max(2, self.epochs // 2)

    @classmethod
    def make(cls, **kw: Any) -> "CompressConfig":
        """The config from keyword settings; None means "the default". Bad values raise
        BadInputError naming the setting."""
        try:
            cfg = cls(**{k: v for k, v in kw.items() if v is not None})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "config"
            raise BadInputError(f"bad compress setting {where}={err.get('input')!r}: {err.get('msg')}",
                                hint="see `edgekd compress --help`") from None
        cfg.check_loss()
        return cfg

    def check_loss(self) -> None:
        """The loss and its options are known (BadInputError naming the valid ones), checked
        before anything runs rather than when distillation starts."""
        from ..distill.options import loss_info, resolve_options

        resolve_options(loss_info(self.loss), dict(self.loss_options))

    def digest(self) -> str:
        doc = self.model_dump(mode="json")
        if not doc["loss_options"]:  # runs written before loss_options existed keep their digest
            del doc["loss_options"]
        for key in ("max_size_kb", "max_peak_mb", "rank"):  # nor before the memory budgets or rank existed
            if doc[key] is None:
                del doc[key]
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the config file

CONFIG_SCHEMA_ID = "edgekd.compress-config/v1"
FILE_ONLY = {"out": "output directory (the --out flag)"}  # file keys that are not CompressConfig fields


def config_schema() -> dict:
    """The JSON schema of a `compress --config` file: CompressConfig's fields plus ``out``
    (docs/compress-config.schema.json is this, written by tools/write_config_schema.py)."""
    schema = CompressConfig.model_json_schema()
    schema["title"] = "edgekd compress --config file"
    schema["$id"] = CONFIG_SCHEMA_ID
    for key, text in FILE_ONLY.items():
        schema["properties"][key] = {"description": text, "title": key.capitalize(), "type": "string"}
    return schema


def read_config_file(path: "str | Path") -> dict[str, Any]:
    """The settings in a YAML (or JSON) `compress --config` file, keys checked against
    CompressConfig's fields and ``out``; the values are validated when the config is made."""
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"config file {p} does not exist",
                            hint="write one with `edgekd compress ... --print-config > run.yaml`") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"config file {p} is not readable YAML: {first}",
                            hint="fix the file, or write one with `--print-config`") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise BadInputError(f"config file {p} holds a {type(doc).__name__}, not a mapping of settings",
                            hint="write `key: value` lines, e.g. `budget_ms: 2`")
    known = set(CompressConfig.model_fields) | set(FILE_ONLY)
    unknown = sorted(str(k) for k in doc if k not in known)
    if unknown:
        raise BadInputError(f"config file {p}: unknown setting '{unknown[0]}'",
                            hint=f"valid settings: {', '.join(sorted(known))}")
    return {str(k): v for k, v in doc.items()}


def config_yaml(cfg: CompressConfig, out: "str | Path | None" = None) -> str:
    """A complete `compress --config` file for ``cfg`` (every setting, defaults included)."""
    import yaml

    doc = cfg.model_dump(mode="json")
    if out is not None:
        doc["out"] = str(out)
    head = f"# {CONFIG_SCHEMA_ID}: edgekd compress --config FILE (docs/compress-config.schema.json)\n"
    return head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
