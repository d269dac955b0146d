"""Distillation losses: pure functions of tensors, and the registry that names them.

Conventions (see docs/METHODS.md):

* each function returns the loss *before* the outer weight the criterion applies; temperature
  losses include their T² factor;
* "batchmean" reduction: sum over classes, mean over samples (never ``nn.KLDivLoss()``'s default
  'mean', which also divides by the number of classes);
* everything is computed in log space (``log_softmax``/``logsigmoid``, never ``log(softmax)``),
  so losses and their gradients stay finite in float32 for an over-confident student;
* teacher inputs are detached here, so a caller cannot backpropagate into the teacher by mistake.

Adding a loss means one function here and one ``LOSSES.register`` line at the bottom.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..registry import Registry

Tensor = torch.Tensor

# ----------------------------------------------------------------------------- helpers


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Per-row KL(p‖q) = Σ_c p_c (log p_c − log q_c) from log-probabilities (p may underflow to 0)."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _drop_column(x: Tensor, index: Tensor) -> Tensor:
    """Remove column ``index[i]`` from row i of an N×C tensor, giving N×(C−1)."""
    n, c = x.shape
    keep = torch.ones_like(x, dtype=torch.bool).scatter_(1, index.view(-1, 1), False)
    return x[keep].view(n, c - 1)


def _check_logits(student: Tensor, teacher: Tensor | None = None) -> None:
    if student.dim() != 2:
        raise ValueError(f"logits must be N×C, got shape {tuple(student.shape)}")
    if teacher is not None and teacher.shape != student.shape:
        raise ValueError(f"student logits {tuple(student.shape)} and teacher logits "
                         f"{tuple(teacher.shape)} differ in shape")


def _target_split(logits: Tensor, target: Tensor, temperature: float):
    """log p_y, log(1 − p_y) and the non-target logits / T, all in log space."""
    z = logits / temperature
    lse_all = torch.logsumexp(z, dim=1)
    z_y = z.gather(1, target.view(-1, 1)).squeeze(1)
    z_nt = _drop_column(z, target)
    log_p_y = z_y - lse_all
    log_not_y = torch.logsumexp(z_nt, dim=1) - lse_all
    return log_p_y, log_not_y, z_nt


def _binary_kl(log_p1: Tensor, log_p0: Tensor, log_q1: Tensor, log_q0: Tensor) -> Tensor:
    """Per-row KL([p1, p0] ‖ [q1, q0]) from log-probabilities."""
    return log_p1.exp() * (log_p1 - log_q1) + log_p0.exp() * (log_p0 - log_q0)


def _tckd_nckd_rows(student_logits: Tensor, teacher_logits: Tensor, target: Tensor,
                    temperature: float):
    """Per-sample TCKD and NCKD (without T²), and the teacher's log p_y and the student's."""
    t = teacher_logits.detach()
    s_log_y, s_log_ny, s_nt = _target_split(student_logits, target, temperature)
    t_log_y, t_log_ny, t_nt = _target_split(t, target, temperature)
    tckd = _binary_kl(t_log_y, t_log_ny, s_log_y, s_log_ny)
    nckd = _kl_rows(F.log_softmax(t_nt, dim=1), F.log_softmax(s_nt, dim=1))
    return tckd, nckd, t_log_y, s_log_y


# ----------------------------------------------------------------------------- logit losses


def standardize_logits(logits: Tensor) -> Tensor:
    """Logit standardization (CVPR'24): ``(z − mean_c z) / (std_c z + 1e-7)`` per sample, with
    the unbiased standard deviation. Invariant to ``a·z + b`` for ``a > 0``."""
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True, unbiased=True)
    return (logits - mean) / (std + 1e-7)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton KD: ``T² · mean_i KL(softmax(zt/T) ‖ softmax(zs/T))``."""
    _check_logits(student_logits, teacher_logits)
    log_ps = F.log_softmax(student_logits / temperature, dim=1)
    log_pt = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return _kl_rows(log_pt, log_ps).mean() * temperature ** 2


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, alpha: float,
             beta: float, temperature: float) -> Tensor:
    """Decoupled KD (CVPR'22): ``T² · mean_i(α·TCKD + β·NCKD)``.

    TCKD is the KL of the binary distributions ``[p_y, 1 − p_y]``; NCKD the KL of the softmax
    over the non-target classes, obtained by dropping the target column (no −inf masking).
    Both are computed from log-probabilities, so KD = TCKD + (1 − p_t,y)·NCKD holds exactly.
    """
    _check_logits(student_logits, teacher_logits)
    tckd, nckd, _, _ = _tckd_nckd_rows(student_logits, teacher_logits, target, temperature)
    return (alpha * tckd + beta * nckd).mean() * temperature ** 2


def nkd_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float,
             gamma: float) -> Tensor:
    """Normalized KD (ICCV'23): ``−mean_i p_t(y)·log p_s(y)`` (at T=1)
    ``− γ·T²·mean_i Σ_{k≠y} q_t,k log q_s,k`` with q the softmax of the non-target logits / T."""
    _check_logits(student_logits, teacher_logits)
    t = teacher_logits.detach()
    idx = target.view(-1, 1)
    log_ps_y = F.log_softmax(student_logits, dim=1).gather(1, idx).squeeze(1)
    pt_y = F.softmax(t, dim=1).gather(1, idx).squeeze(1)
    target_term = -(pt_y * log_ps_y).mean()
    log_qs = F.log_softmax(_drop_column(student_logits, target) / temperature, dim=1)
    log_qt = F.log_softmax(_drop_column(t, target) / temperature, dim=1)
    non_target = -(log_qt.exp() * log_qs).sum(dim=1).mean()
    return target_term + gamma * temperature ** 2 * non_target


def _pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of matching rows; 0 where a row is constant (no NaN, finite grads)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denom = torch.sqrt(((a * a).sum(dim=1) * (b * b).sum(dim=1)).clamp_min(1e-30))
    return (a * b).sum(dim=1) / denom


def dist_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float, beta: float,
              gamma: float) -> Tensor:
    """DIST (NeurIPS'22): ``τ²(β·(1 − mean_i ρ(Ys_i, Yt_i)) + γ·(1 − mean_c ρ(Ys_c, Yt_c)))``,
    ρ the Pearson correlation, Y = softmax(z/τ); inter-class over rows, intra-class over columns."""
    _check_logits(student_logits, teacher_logits)
    ys = F.softmax(student_logits / tau, dim=1)
    yt = F.softmax(teacher_logits.detach() / tau, dim=1)
    inter = 1.0 - _pearson_rows(ys, yt).mean()
    intra = 1.0 - _pearson_rows(ys.t(), yt.t()).mean()
    return tau ** 2 * (beta * inter + gamma * intra)


def mld_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Multi-label logit distillation (L2D): ``(1/N)·Σ_{i,c} binaryKL(σ(zt) ‖ σ(zs))``.

    Computed with ``logsigmoid`` (log σ(z) and log(1 − σ(z)) = logsigmoid(−z)), which is exact
    and finite everywhere, so the reference's probability clamp at 1e-8 is not needed.
    """
    _check_logits(student_logits, teacher_logits)
    t = teacher_logits.detach()
    kl = _binary_kl(F.logsigmoid(t), F.logsigmoid(-t),
                    F.logsigmoid(student_logits), F.logsigmoid(-student_logits))
    return kl.sum(dim=1).mean()


def aekt_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float,
              clip: float = 10.0) -> Tensor:
    """Adaptive explicit knowledge transfer: edgekd's own *interpretation* of the abstract of
    arXiv 2409.01679 (there is no public reference code; this is not the authors' method).

    ``T² · mean_i[w_i·TCKD_i + (1 − p_t,y)·NCKD_i]`` where the explicit-knowledge term TCKD (the
    binary KL on the target class) is weighted per sample by ``w_i = clip(p_t(y)/p_s(y), 0,
    clip)``, detached, and the implicit term is the non-target KL weighted by the teacher's
    non-target mass. ``student_logits`` are the logits the distillation loss sees: in the
    criterion, the output of the C×C serialization layer on top of the student (task
    separation; CE sees the plain logits and the layer is dropped at export).
    """
    _check_logits(student_logits, teacher_logits)
    tckd, nckd, t_log_y, s_log_y = _tckd_nckd_rows(student_logits, teacher_logits, target,
                                                   temperature)
    if clip > 0:
        log_ratio = (t_log_y - s_log_y).detach().clamp(max=math.log(clip))
        weight = log_ratio.exp()
    else:
        weight = torch.zeros_like(tckd)
    implicit = 1.0 - t_log_y.exp()
    return (weight * tckd + implicit * nckd).mean() * temperature ** 2


# ----------------------------------------------------------------------------- feature losses


def fitnet_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """FitNet hint loss: ``MSE(r(F_s), F_t)`` (mean over all elements, as the reference; the
    criterion applies λ). ``student_features`` are already passed through the regressor r."""
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"regressed student features {tuple(student_features.shape)} do not "
                         f"match teacher features {tuple(teacher_features.shape)}")
    return F.mse_loss(student_features, teacher_features.detach())


def _attention_map(feat: Tensor, p: float) -> Tensor:
    return F.normalize(feat.pow(p).mean(dim=1).flatten(1), dim=1)


def at_loss(student_features: list[Tensor], teacher_features: list[Tensor], p: float = 2.0) -> Tensor:
    """Attention transfer: ``Σ_stages mean((a_s − a_t)²)``, ``a(F) = normalize₂(vec(mean_c F_c^p))``.
    The larger map is average-pooled to the smaller one's size. The criterion applies β."""
    if len(student_features) != len(teacher_features) or not student_features:
        raise ValueError("at_loss needs the same non-zero number of student and teacher stages")
    total = student_features[0].new_zeros(())
    for fs, ft in zip(student_features, teacher_features):
        ft = ft.detach()
        hs, ht = fs.shape[-2:], ft.shape[-2:]
        if hs[0] * hs[1] > ht[0] * ht[1]:
            fs = F.adaptive_avg_pool2d(fs, ht)
        elif hs[0] * hs[1] < ht[0] * ht[1]:
            ft = F.adaptive_avg_pool2d(ft, hs)
        total = total + (_attention_map(fs, p) - _attention_map(ft, p)).pow(2).mean()
    return total


def _pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    sq = e.pow(2).sum(dim=1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * e @ e.t()).clamp_min(eps)
    eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
    return torch.where(eye, torch.zeros_like(d2), d2.sqrt())


def _normalised_distances(e: Tensor) -> Tensor:
    d = _pairwise_distances(e)
    positive = d > 0
    mean = d[positive].mean() if bool(positive.any()) else d.new_ones(())
    return d / mean


def _angles(e: Tensor) -> Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def rkd_loss(student_features: Tensor, teacher_features: Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0) -> Tensor:
    """Relational KD: ``w_d·SmoothL1(ψ_D(s), ψ_D(t)) + w_a·SmoothL1(ψ_A(s), ψ_A(t))`` on flattened
    (pooled penultimate) features; distances are divided by their mean over non-zero pairs."""
    s = student_features.flatten(1)
    t = teacher_features.detach().flatten(1)
    with torch.no_grad():
        t_d = _normalised_distances(t)
        t_a = _angles(t)
    loss_d = F.smooth_l1_loss(_normalised_distances(s), t_d)
    loss_a = F.smooth_l1_loss(_angles(s), t_a)
    return distance_weight * loss_d + angle_weight * loss_a


def nd_loss(student_features: Tensor, teacher_features: Tensor, target: Tensor,
            class_means: Tensor) -> Tensor:
    """Norm & direction loss (NeurIPS'23): ``mean_i[1 − ⟨f_s,i, ĉ_yi⟩ / max(‖f_s,i‖, ‖f_t,i‖)]``
    with ĉ the unit class means of the teacher's embeddings (C×D, rows normalised here)."""
    s = student_features.flatten(1)
    t = teacher_features.detach().flatten(1)
    if s.shape != t.shape:
        raise ValueError(f"student features {tuple(s.shape)} must be projected to the teacher's "
                         f"{tuple(t.shape)} before nd_loss")
    centers = F.normalize(class_means.detach(), dim=1)[target]
    denom = torch.maximum(s.norm(dim=1), t.norm(dim=1)).clamp_min(1e-12)
    return (1.0 - (s * centers).sum(dim=1) / denom).mean()


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class LossInfo:
    """What the criterion needs to know about a loss: defaults are the CIFAR-style ones listed in
    docs/METHODS.md (w_* are outer weights; options not listed here are rejected)."""

    name: str
    defaults: dict[str, Any] = field(default_factory=dict)
    kind: str = "logit"  # "logit" | "feature" | "relational"
    needs_labels: bool = False
    description: str = ""


LOSSES: Registry[LossInfo] = Registry("distillation loss", entry_point_group="edgekd.losses")


def _add(info: LossInfo) -> None:
    LOSSES.register(info.name)(info)


_add(LossInfo("kd", {"temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9, "ls": False},
              "logit", False, "Hinton KD: T²·KL(p_t^T ‖ p_s^T)"))
_add(LossInfo("dkd", {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "w_ce": 1.0, "w_kd": 1.0,
                      "warmup": 20, "ls": False},
              "logit", True, "Decoupled KD: α·TCKD + β·NCKD, warm-up min(epoch/20, 1)"))
_add(LossInfo("nkd", {"temperature": 3.0, "gamma": 3.5, "w_ce": 1.0, "w_kd": 1.0, "ls": False},
              "logit", True, "Normalized KD: target term + γ·T²·normalized non-target CE"))
_add(LossInfo("dist", {"tau": 4.0, "beta": 1.0, "gamma": 1.0, "w_ce": 1.0, "w_kd": 2.0, "ls": False},
              "logit", False, "DIST: inter- and intra-class Pearson correlation"))
_add(LossInfo("aekt", {"temperature": 4.0, "clip": 10.0, "w_ce": 1.0, "w_kd": 1.0, "ls": False},
              "logit", True, "edgekd's interpretation of adaptive explicit knowledge transfer "
              "(arXiv 2409.01679): ratio-weighted TCKD + (1−p_t)·NCKD on a C×C serialization layer"))
_add(LossInfo("dual_head", {"temperature": 4.0, "lam": 0.5, "w_ce": 0.5, "w_kd": 0.5, "ls": False},
              "logit", False, "Dual-head: CE on the student head, KD on a second head; "
              "exported as one folded head λ·a + (1−λ)·b"))
_add(LossInfo("mld", {"w_ce": 1.0, "w_kd": 1.0, "ls": False},
              "logit", False, "Multi-label logit distillation: per-class binary KL of sigmoids"))
_add(LossInfo("fitnet", {"w_ce": 1.0, "w_feat": 100.0, "student_layer": "", "teacher_layer": "",
                         "res": 32},
              "feature", False, "FitNet hints: MSE between regressed student and teacher features"))
_add(LossInfo("at", {"w_ce": 1.0, "beta": 1000.0, "p": 2.0, "student_layers": "",
                     "teacher_layers": "", "res": 32},
              "feature", False, "Attention transfer over matching stages"))
_add(LossInfo("rkd", {"w_ce": 1.0, "w_dist": 25.0, "w_angle": 50.0},
              "relational", False, "Relational KD: distance and angle on penultimate features"))
_add(LossInfo("nd", {"temperature": 4.0, "w_ce": 1.0, "w_kd": 1.0, "w_nd": 2.0, "warmup": 20,
                     "ls": False},
              "feature", True, "KD + norm & direction of penultimate features toward the "
              "teacher's class means"))


def loss_names() -> list[str]:
    return LOSSES.names()
