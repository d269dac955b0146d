"""What ``edgekd compress`` will do, checked against this machine before anything is written.

    make_plan(config) -> Plan       the steps, the targets, the resolution and the profile to use
    find_profile(target, family)    profiles/<target>-<family>.json when it applies here
    profile_dirs()                  where profiles are looked up, first match wins
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import BadInputError
from .config import DEFAULT_FAMILY, CompressConfig

log = logging.getLogger(__name__)


@dataclass
class Plan:
    config: CompressConfig
    target: Any
    final_target: Any
    int8_target: Any
    resolution: Optional[int]
    family: str
    profile: Optional[Path]
    profile_note: str
    steps: list[tuple[str, str]] = field(default_factory=list)

    def text(self) -> str:
        mem = ", ".join(f"{what} <= {v:g} {unit}" for what, v, unit in (
            ("size", self.config.max_size_kb, "KB"), ("peak memory", self.config.max_peak_mb, "MB")) if v is not None)
        lines = [f"plan for {self.config.teacher} -> {self.config.target} at {self.config.budget_ms:g} ms "
                 f"({self.config.metric}){', ' + mem if mem else ''}:"]
        lines += [f"  {i}. {name:<9} {what}" for i, (name, what) in enumerate(self.steps, start=1)]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"steps": [{"stage": n, "what": w} for n, w in self.steps], "family": self.family,
                "profile": str(self.profile) if self.profile else None, "resolution": self.resolution}


# --------------------------------------------------------------------------- planning

def profile_dirs() -> list[Path]:
    """Where profiles/<target>-<family>.json are looked up, first match wins: ./profiles, the
    repository's profiles/ (editable install), and the copy packed into the wheel
    (edgekd/_data/profiles, as targets.targets_dirs finds edgekd/_data/targets)."""
    package = Path(__file__).resolve().parents[1]  # edgekd/
    out: list[Path] = []
    for d in (Path.cwd() / "profiles", package.parent / "profiles", package / "_data" / "profiles"):
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


_shadow_said: set[str] = set()


def locate_profile(target_name: str, family: str) -> Optional[Path]:
    """The first <target>-<family>.json in :func:`profile_dirs`, whatever environment measured it.
    One in ./profiles that stands in for a shipped profile of that name is said once on stderr:
    it decides which student compress picks."""
    name = f"{target_name}-{family}.json"
    found = [d / name for d in profile_dirs() if (d / name).is_file()]
    if not found:
        return None
    package = Path(__file__).resolve().parents[1]
    shipped = {str((d / name).resolve()) for d in (package.parent / "profiles", package / "_data" / "profiles")}
    first = found[0]
    if str(first.resolve()) not in shipped and any(str(p.resolve()) in shipped for p in found[1:]):
        if str(first) not in _shadow_said:
            _shadow_said.add(str(first))
            log.warning("profile %s shadows the shipped %s (compress picks its student from it)",
                        first, next(p for p in found[1:] if str(p.resolve()) in shipped))
    return first


def find_profile(target, family: str, resolution: Optional[int] = None) -> tuple[Optional[Path], str]:
    """profiles/<target>-<family>.json when it exists, was measured in this environment and (with
    ``resolution``) holds candidates at that resolution; else None and why."""
    from ..latency.profile import check_fingerprint, current_fingerprint, load_profile

    p = locate_profile(target.name, family)
    if p is None:
        return None, f"no profile {target.name}-{family}.json here"
    try:
        prof = load_profile(p)
    except BadInputError as exc:
        return None, f"{p} is unusable ({exc.one_line()})"
    why = check_fingerprint(prof, current_fingerprint(target))
    if why:
        return None, why
    sizes = profile_resolutions(prof) if resolution else []
    if resolution and int(resolution) not in sizes:
        return None, f"{p.name} has no candidate at {resolution} px (it has {', '.join(map(str, sizes))} px)"
    return p, f"profile {p}"


def profile_resolutions(profile) -> list[int]:
    """The input resolutions of a profile's whole-model candidates, smallest first."""
    from ..models import parse_spec

    return sorted({int(parse_spec(m.spec).res) for m in profile.models})


def _teacher_resolution(cfg: CompressConfig) -> Optional[int]:
    """The input resolution the teacher was made for, read without loading it: an edgekd
    checkpoint's recorded shape, an hf: directory's config.json ``image_size``, or an ONNX
    graph's fixed input height and width; None when the teacher does not say."""
    import json

    if cfg.teacher.startswith("hf:"):
        try:
            size = json.loads((Path(cfg.teacher[3:]).expanduser() / "config.json")
                              .read_text(encoding="utf-8")).get("image_size")
        except (OSError, ValueError, AttributeError):
            return None  # load_teacher says what is wrong with the directory
        size = size[-1] if isinstance(size, (list, tuple)) and size else size
        return int(size) if isinstance(size, int) and size > 0 else None
    p = Path(cfg.teacher).expanduser()
    if not p.is_file() or p.suffix.lower() not in (".pt", ".pth", ".onnx"):
        return None
    if p.suffix.lower() == ".onnx":
        return _onnx_resolution(p)
    from ..models.ref import stored_input_shape

    shape = stored_input_shape(p)
    return int(shape[-1]) if shape and len(shape) == 3 else None


def _onnx_resolution(path: Path) -> Optional[int]:
    """H of an ONNX graph's first real input when it is N×C×H×W with H = W fixed, else None."""
    from ..backends.calib import onnx_input_info

    try:
        _, dims = onnx_input_info(path)
    except Exception:  # noqa: BLE001 - not readable here: the teacher's loader says why
        return None
    return int(dims[2]) if len(dims) == 4 and dims[2] and dims[2] == dims[3] else None


def make_plan(cfg: CompressConfig) -> Plan:
    """What compress() will do, checked against this machine (no file is written)."""
    from ..backends import require_backend
    from ..models import family_names, parse_spec
    from ..targets import Precision, load_target

    target = load_target(cfg.target)
    require_backend(target)
    tp = Path(cfg.teacher).expanduser()
    if cfg.teacher.startswith("hf:"):  # a save_pretrained directory; load_teacher checks the rest
        if not Path(cfg.teacher[3:]).expanduser().is_dir():
            raise BadInputError(f"teacher directory '{cfg.teacher[3:]}' does not exist",
                                hint="give a local save_pretrained directory: --teacher hf:DIR")
    elif not cfg.teacher.startswith("py:") and not tp.is_file() and ("/" in cfg.teacher or tp.suffix in (
            ".pt", ".pth", ".ts", ".pt2", ".onnx")):
        raise BadInputError(f"teacher file '{cfg.teacher}' does not exist", hint="check the path")
    resolution = cfg.resolution or (parse_spec(cfg.student).res if cfg.student != "auto" else None) \
        or _teacher_resolution(cfg)
    int8_target, final = None, target
    if cfg.quantize == "int8":
        name = target.name if target.is_int8 else f"{target.name}-int8"
        try:
            int8_target = load_target(name)
        except BadInputError as exc:
            raise BadInputError(f"--quantize int8 needs the int8 twin of target '{target.name}' ({name})",
                                hint="add targets/<name>-int8.yaml or use --quantize off") from exc
        require_backend(int8_target)
    elif cfg.quantize == "fp16" and target.precision != Precision.fp16:
        raise BadInputError(f"--quantize fp16: target '{target.name}' runs {target.precision.value}",
                            hint="pick a target whose precision is fp16 (e.g. tensorrt-fp16) or --quantize off")
    family, prof, note = cfg.family, None, ""
    steps = []
    budgets = "budget" if cfg.max_size_kb is None and cfg.max_peak_mb is None else "latency and memory budgets"
    if cfg.student != "auto":
        steps.append(("select", f"student {parse_spec(cfg.student).spec} (given)"))
        family = parse_spec(cfg.student).family
    else:
        fams = family_names() if cfg.family == "auto" else [cfg.family]
        if cfg.family != "auto" and cfg.family not in family_names():
            raise BadInputError(f"--family {cfg.family} is not a student family",
                                hint=f"use one of: {', '.join(family_names())}")
        for fam in fams:
            p, why = find_profile(target, fam, resolution)
            if p is not None:
                family, prof, note = fam, p, why
                break
            note = why if cfg.family != "auto" else f"no usable profile for {target.name} here"
        if prof is None:
            family = DEFAULT_FAMILY if cfg.family == "auto" else cfg.family
            at = f"{resolution} px" if resolution else "the data's resolution"
            steps.append(("select", f"profile the '{cfg.grid}' grid of {family} at {at} "
                                    f"on {target.name} ({note}), then pick the largest student{_by(cfg, family)} "
                                    f"predicted under the {budgets} and measure it"))
        else:
            steps.append(("select", f"largest {family} student{_by(cfg, family)} predicted under the {budgets} "
                                    f"in {prof}, measured on {target.name}"))
    opts = ", ".join(f"{k}={v}" for k, v in cfg.loss_options.items())
    steps.append(("distill", f"{cfg.loss}{f' ({opts})' if opts else ''} from {cfg.teacher} on {cfg.data}, "
                             f"{cfg.epochs} epochs"))
    steps.append(("prune", "off" if cfg.prune == "off" else
                  f"if the distilled student misses the budget: prune with torch-pruning to the budget, "
                  f"then fine-tune {cfg.finetune_epochs} epochs by KD from the teacher"))
    steps.append(("export", f"ONNX + {target.runtime.value} artifact for {target.name}, parity-checked"))
    if int8_target is not None:
        steps.append(("quantize", f"int8 for {int8_target.name}, kept only if faster than fp32"))
        final = int8_target
    else:
        steps.append(("quantize", "off" if cfg.quantize == "off" else f"fp16: built by the {target.name} backend"))
    req = [f"{cfg.metric} <= {cfg.budget_ms:g} ms"]
    if cfg.min_accuracy is not None:
        req.append(f"accuracy >= {cfg.min_accuracy:.4f}")
    if cfg.max_drop is not None:
        req.append(f"drop <= {cfg.max_drop:g} vs torch student")
    if cfg.max_size_kb is not None:
        req.append(f"size <= {cfg.max_size_kb:g} KB")
    if cfg.max_peak_mb is not None:
        req.append(f"peak memory <= {cfg.max_peak_mb:g} MB")
    steps.append(("verify", f"on {final.name if int8_target else target.name}: " + ", ".join(req)))
    steps.append(("report", "manifest.json, report.json, report.md, report.html"))
    return Plan(config=cfg, target=target, final_target=final, int8_target=int8_target,
                resolution=resolution, family=family, profile=prof, profile_note=note, steps=steps)


def _by(cfg, family: str) -> str:
    """' by MACs' / ' by params': the capacity order select will use (--rank, else the family's)."""
    from ..latency.select import family_rank

    rank = cfg.rank or family_rank(family)
    return f" by {_RANK_WORDS.get(rank, rank)}"


_RANK_WORDS = {"macs": "MACs", "params": "params"}
