"""The training criterion: CE plus one distillation loss, outer weights, warm-up, extra modules.

``build_criterion(name, options, num_classes=..., student=..., teacher=..., epochs=...)`` returns
a :class:`Criterion` (an ``nn.Module``). Its extra trainable modules (aekt's serialization layer,
fitnet's regressor, nd's projector, dual_head's second head) are submodules, so
``criterion.parameters()`` is what to optimise alongside the student and
``criterion.state_dict()`` is what to checkpoint. The student and teacher are *not* submodules.

Warm-up (dkd, nd): weight ``min((epoch + 1) / W, 1)`` with ``epoch`` counted from 0 by the caller
(the same as the reference's ``min(epoch / 20, 1)`` counted from 1), where
``W = min(warmup, max(1, epochs // 2))``: the warm-up never spans more than half the run, so a
short run still trains most epochs at full weight. ``warmup=0`` disables it.

Targets may hold -1 (unlabelled samples): CE ignores them (0, not NaN, when a batch has none) and
label-needing terms (dkd, nkd, aekt, nd) use the teacher's argmax for those rows.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BadInputError
from . import losses as L
from .options import CE_INFO, loss_info, resolve_options, valid_names
from .stages import device_of, first_input_channels, pair_stages, probe, stage_paths
from .taps import FeatureTaps, last_linear, penultimate_path, strip_hooks

__all__ = ["Criterion", "build_criterion", "cross_entropy_labelled", "resolve_options",
           "valid_names", "CE_INFO"]


def _labels_or_teacher(target: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    return torch.where(target >= 0, target, teacher_logits.detach().argmax(dim=1))


def cross_entropy_labelled(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CE over rows with a label (target >= 0); 0 (with a graph) when the batch has none.
    A float N×C target is multi-hot: binary cross-entropy with logits."""
    if target.dim() == 2 and target.is_floating_point():
        return F.binary_cross_entropy_with_logits(logits, target)
    labelled = target >= 0
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled], target[labelled])


def _conv_regressor(s_shape, t_shape) -> nn.Module:
    """FitNet regressor from the probed shapes: 3×3 stride-2 conv when the student map is twice
    the teacher's, 4×4 stride-2 transposed conv when half, else a 1×1 conv (any leftover size
    difference is average-pooled away in forward); then BN + ReLU. Linear for 2-D features."""
    if len(s_shape) == 2:
        return nn.Linear(s_shape[1], t_shape[1])
    sc, sh, tc, th = s_shape[1], s_shape[2], t_shape[1], t_shape[2]
    if sh == 2 * th:
        conv = nn.Conv2d(sc, tc, 3, stride=2, padding=1)
    elif 2 * sh == th:
        conv = nn.ConvTranspose2d(sc, tc, 4, stride=2, padding=1)
    else:
        conv = nn.Conv2d(sc, tc, 1)
    return nn.Sequential(conv, nn.BatchNorm2d(tc), nn.ReLU(inplace=False))


class Criterion(nn.Module):
    """CE + one distillation loss. Build it with :func:`build_criterion`."""

    def __init__(self, info: L.LossInfo, options: dict[str, Any], *, num_classes: int,
                 student: nn.Module, teacher: Any, epochs: int):
        super().__init__()
        self.name = info.name
        self.info = info
        self.options = options
        self.num_classes = int(num_classes)
        self.epochs = int(epochs)
        self.needs_teacher = info.name != "ce"
        self.needs_teacher_features = info.kind in ("feature", "relational")
        # plain attributes, deliberately not submodules (not in parameters()/state_dict())
        self.__dict__["_student"] = student
        self.__dict__["_teacher"] = teacher
        self._s_taps: FeatureTaps | None = None
        self._t_taps: FeatureTaps | None = None
        self._s_paths: list[str] = []
        self._t_paths: list[str] = []
        self._head_path = ""
        if self.needs_teacher and teacher is None:
            raise BadInputError(f"loss '{self.name}' needs a teacher and none was given",
                                hint="pass a teacher, or use loss 'ce' for plain training")
        getattr(self, f"_setup_{self.name}", lambda: None)()

    # ------------------------------------------------------------------ set-up per loss
    def _teacher_module(self) -> nn.Module:
        t = self._teacher
        module = t if isinstance(t, nn.Module) else getattr(t, "module", None)
        if not isinstance(module, nn.Module):
            raise BadInputError(f"loss '{self.name}' reads the teacher's features, but the "
                                f"teacher is not a torch module", hint="use a logit loss "
                                "(kd, dkd, dist, ...) with this teacher")
        return module

    def _tap(self, s_paths: list[str], t_paths: list[str]) -> None:
        self._s_paths, self._t_paths = s_paths, t_paths
        self._s_taps = FeatureTaps(self._student, s_paths) if s_paths else None
        if t_paths:
            self._t_taps = FeatureTaps(self._teacher_module(), t_paths)

    def _setup_aekt(self) -> None:
        self.serial = nn.Linear(self.num_classes, self.num_classes)
        with torch.no_grad():
            self.serial.weight.copy_(torch.eye(self.num_classes))
            self.serial.bias.zero_()
        self.serial.to(device_of(self._student))

    def _setup_dual_head(self) -> None:
        self._head_path, head = last_linear(self._student, self.num_classes)
        self.head2 = copy.deepcopy(head)
        self.head2.reset_parameters()
        self._tap([penultimate_path(self._student, self.num_classes)], [])

    def _setup_rkd(self) -> None:
        self._tap([penultimate_path(self._student, self.num_classes)],
                  [penultimate_path(self._teacher_module(), self.num_classes)])

    def _setup_nd(self) -> None:
        tm = self._teacher_module()
        _, s_head = last_linear(self._student, self.num_classes)
        _, t_head = last_linear(tm, self.num_classes)
        ds, dt = s_head.in_features, t_head.in_features
        self.proj = nn.Identity() if ds == dt else nn.Linear(ds, dt, bias=False).to(
            device_of(self._student))
        self.register_buffer("class_means", torch.zeros(self.num_classes, dt))
        self._prepared = False
        self._tap([penultimate_path(self._student, self.num_classes)],
                  [penultimate_path(tm, self.num_classes)])

    def _feature_paths(self, single: bool) -> tuple[list[str], list[str], int, int]:
        o = self.options
        tm = self._teacher_module()
        res, ch = o["res"], first_input_channels(self._student)
        key_s, key_t = ("student_layer", "teacher_layer") if single else (
            "student_layers", "teacher_layers")
        s_given = [p.strip() for p in o[key_s].split(",") if p.strip()]
        t_given = [p.strip() for p in o[key_t].split(",") if p.strip()]
        if bool(s_given) != bool(t_given) or len(s_given) != len(t_given):
            raise BadInputError(f"options {key_s}={o[key_s]!r} and {key_t}={o[key_t]!r} must "
                                f"name the same number of layers", hint="give both, or neither "
                                "to let edgekd pick matching stages")
        if not s_given:
            s_st, t_st = stage_paths(self._student, res, ch), stage_paths(tm, res, ch)
            if not s_st or not t_st:
                raise BadInputError(f"could not find feature stages for loss '{self.name}'",
                                    hint=f"name them with {key_s}=... {key_t}=...")
            if single:
                mid = len(s_st) // 2
                t_idx = round(mid * (len(t_st) - 1) / max(len(s_st) - 1, 1))
                s_given, t_given = [s_st[mid]], [t_st[t_idx]]
            else:
                pairs = pair_stages(s_st, t_st, min(len(s_st), len(t_st)))
                s_given, t_given = [p[0] for p in pairs], [p[1] for p in pairs]
        return s_given, t_given, res, ch

    def _setup_fitnet(self) -> None:
        s_paths, t_paths, res, ch = self._feature_paths(single=True)
        self._tap(s_paths, t_paths)
        s_shape = probe(self._student, s_paths, res, ch)[s_paths[0]]
        t_shape = probe(self._teacher_module(), t_paths, res, ch)[t_paths[0]]
        self.regressor = _conv_regressor(s_shape, t_shape).to(device_of(self._student))

    def _setup_at(self) -> None:
        s_paths, t_paths, _, _ = self._feature_paths(single=False)
        self._tap(s_paths, t_paths)

    # ------------------------------------------------------------------ helpers
    def _feature(self, taps: FeatureTaps | None, path: str, n: int) -> torch.Tensor:
        feat = taps.features.get(path) if taps is not None else None
        if feat is None or feat.shape[0] != n:
            raise BadInputError(f"loss '{self.name}' found no features at '{path}' for this "
                                f"batch", hint="run the student and the teacher forward on the "
                                "batch (teacher live, not from a logit cache) before the criterion")
        return feat

    def _warm(self, epoch: int) -> float:
        warmup = int(self.options.get("warmup", 0))
        if warmup <= 0:
            return 1.0
        span = min(warmup, max(1, self.epochs // 2))
        return min((epoch + 1) / span, 1.0)

    def _ls(self, zs: torch.Tensor, zt: torch.Tensor):
        if self.options.get("ls"):
            return L.standardize_logits(zs), L.standardize_logits(zt)
        return zs, zt

    # ------------------------------------------------------------------ API
    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                target: torch.Tensor, epoch: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (CE and outer weights included) and its parts as floats."""
        o, name = self.options, self.name
        if self.needs_teacher and teacher_logits is None:
            raise BadInputError(f"loss '{name}' needs teacher logits for every batch",
                                hint="run the teacher (or read its logit cache) and pass them")
        if teacher_logits is not None:
            teacher_logits = teacher_logits.detach().to(student_logits.dtype)
        n = student_logits.shape[0]
        ce = cross_entropy_labelled(student_logits, target)
        parts: dict[str, float] = {"ce": float(ce.detach())}
        total = o["w_ce"] * ce
        if name == "ce":
            parts["total"] = float(total.detach())
            return total, parts
        zt = teacher_logits
        y = _labels_or_teacher(target, zt) if self.info.needs_labels and target.dim() == 1 else None
        if name == "kd":
            kd = L.kd_loss(*self._ls(student_logits, zt), o["temperature"])
            total = total + o["w_kd"] * kd
        elif name == "dkd":
            kd = L.dkd_loss(*self._ls(student_logits, zt), y, o["alpha"], o["beta"],
                            o["temperature"])
            parts["warmup"] = self._warm(epoch)
            total = total + o["w_kd"] * parts["warmup"] * kd
        elif name == "nkd":
            kd = L.nkd_loss(*self._ls(student_logits, zt), y, o["temperature"], o["gamma"])
            total = total + o["w_kd"] * kd
        elif name == "dist":
            kd = L.dist_loss(*self._ls(student_logits, zt), o["tau"], o["beta"], o["gamma"])
            total = total + o["w_kd"] * kd
        elif name == "mld":
            kd = L.mld_loss(*self._ls(student_logits, zt))
            total = total + o["w_kd"] * kd
        elif name == "aekt":
            kd = L.aekt_loss(*self._ls(self.serial(student_logits), zt), y, o["temperature"],
                             o["clip"])
            total = total + o["w_kd"] * kd
        elif name == "dual_head":
            feats = self._feature(self._s_taps, self._s_paths[0], n)
            kd = L.kd_loss(*self._ls(self.head2(feats), zt), o["temperature"])
            total = total + o["w_kd"] * kd
        elif name == "nd":
            kd = L.kd_loss(*self._ls(student_logits, zt), o["temperature"])
            fs = self.proj(self._feature(self._s_taps, self._s_paths[0], n).flatten(1))
            ft = self._feature(self._t_taps, self._t_paths[0], n).flatten(1)
            if not self._prepared:
                raise BadInputError("loss 'nd' needs the teacher's class means",
                                    hint="call criterion.prepare(teacher_fn, loader) once "
                                         "before training")
            nd = L.nd_loss(fs, ft, y, self.class_means)
            parts["nd"], parts["warmup"] = float(nd.detach()), self._warm(epoch)
            total = total + o["w_kd"] * kd + o["w_nd"] * parts["warmup"] * nd
        elif name == "fitnet":
            fs = self.regressor(self._feature(self._s_taps, self._s_paths[0], n))
            ft = self._feature(self._t_taps, self._t_paths[0], n)
            if fs.dim() == 4 and fs.shape[-2:] != ft.shape[-2:]:
                fs = F.adaptive_avg_pool2d(fs, ft.shape[-2:])
            kd = L.fitnet_loss(fs, ft)
            total = total + o["w_feat"] * kd
        elif name == "at":
            fs = [self._feature(self._s_taps, p, n) for p in self._s_paths]
            ft = [self._feature(self._t_taps, p, n) for p in self._t_paths]
            kd = L.at_loss(fs, ft, o["p"])
            total = total + o["beta"] * kd
        elif name == "rkd":
            fs = self._feature(self._s_taps, self._s_paths[0], n)
            ft = self._feature(self._t_taps, self._t_paths[0], n)
            kd = L.rkd_loss(fs, ft, o["w_dist"], o["w_angle"])
            total = total + kd
        else:  # a loss registered by a plug-in without criterion support
            raise BadInputError(f"loss '{name}' is registered but edgekd's criterion cannot "
                                f"train it", hint="use one of: " + ", ".join(valid_names()))
        for taps in (self._s_taps, self._t_taps):
            if taps is not None:
                taps.clear()
        parts["kd"] = float(kd.detach())
        parts["total"] = float(total.detach())
        return total, parts

    def student_logits_for_eval(self, student_logits: torch.Tensor) -> torch.Tensor:
        """The logits the deployable model gives for the batch the student just ran on: the
        student's own, or for dual_head the mix ``λ·a + (1−λ)·b``."""
        if self.name != "dual_head":
            return student_logits
        feats = self._feature(self._s_taps, self._s_paths[0], student_logits.shape[0])
        lam = self.options["lam"]
        return lam * student_logits + (1.0 - lam) * self.head2(feats)

    @torch.no_grad()
    def prepare(self, teacher_fn: Callable[[torch.Tensor], torch.Tensor], loader) -> None:
        """One pass over ``loader`` (batches ``(inputs, targets, ...)``) calling
        ``teacher_fn(inputs) -> logits``; for nd, the teacher's per-class mean embeddings
        (unlabelled rows count for the teacher's argmax class). A no-op for other losses."""
        if self.name != "nd":
            return
        path = self._t_paths[0]
        sums = counts = None
        for batch in loader:
            x, target = batch[0], batch[1]
            logits = teacher_fn(x)
            feat = self._feature(self._t_taps, path, logits.shape[0]).flatten(1).float()
            y = _labels_or_teacher(target.to(logits.device), logits).to(feat.device)
            if sums is None:
                sums = feat.new_zeros(self.num_classes, feat.shape[1])
                counts = feat.new_zeros(self.num_classes)
            sums.index_add_(0, y, feat)
            counts.index_add_(0, y, torch.ones_like(y, dtype=feat.dtype))
            self._t_taps.clear()
        if sums is None:
            raise BadInputError("criterion.prepare got an empty loader",
                                hint="pass the training loader")
        means = sums / counts.clamp_min(1).unsqueeze(1)
        self.class_means.copy_(means.to(self.class_means.device, self.class_means.dtype))
        self._prepared = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.name == "nd" and prefix + "class_means" in state_dict:
            self._prepared = True

    def deployable(self, student: nn.Module) -> nn.Module:
        """What to export: the student without edgekd's hooks or extra modules; for dual_head a
        copy whose classifier is the exact fold ``λ·W_a + (1−λ)·W_b`` of the two heads. The
        student itself is returned when no hooks are attached to it."""
        ids = {h.id for h in (self._s_taps._handles if self._s_taps else [])}
        if self.name != "dual_head" and not ids:
            return student
        out = copy.deepcopy(student)
        strip_hooks(out, ids)
        if self.name == "dual_head":
            head = out.get_submodule(self._head_path)
            lam = self.options["lam"]
            with torch.no_grad():
                head.weight.copy_(lam * head.weight + (1 - lam) * self.head2.weight)
                if head.bias is not None:
                    head.bias.copy_(lam * head.bias + (1 - lam) * self.head2.bias)
        return out

    def close(self) -> None:
        """Remove the forward hooks this criterion put on the student and teacher."""
        for taps in (self._s_taps, self._t_taps):
            if taps is not None:
                taps.remove()
        self._s_taps = self._t_taps = None



def build_criterion(name: str, options: dict[str, str | float | int | bool] | None = None, *,
                    num_classes: int, student: nn.Module, teacher: Any = None, epochs: int,
                    ls: bool = False) -> Criterion:
    """The criterion for loss ``name`` ("ce" or a registered distillation loss).

    ``options`` override the loss's defaults (values may be strings: "4", "0.9", "true");
    ``ls=True`` turns on logit standardization. ``teacher`` may be an ``nn.Module`` or an object
    with a ``.module`` (needed only by feature/relational losses, which tap its layers).
    """
    info = loss_info(name)
    if int(epochs) < 1:
        raise BadInputError(f"epochs={epochs} must be at least 1", hint="pass the run's epochs")
    resolved = resolve_options(info, options, ls)
    return Criterion(info, resolved, num_classes=num_classes, student=student, teacher=teacher,
                     epochs=epochs)
