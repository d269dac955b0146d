"""Distillation loss functions: hand-computed values (numpy, written out independently of the
implementation), identities, batchmean reduction, and float32 stability."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgekd.distill import losses as L

ZS = np.array([[1.0, 2.0, 0.5, -0.5], [0.0, -1.0, 3.0, 1.0]])
ZT = np.array([[2.0, 0.5, 1.0, 0.0], [1.0, 1.5, 0.0, -2.0]])
Y = np.array([1, 2])


def t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_kl(p, q):
    return float(np.sum(p * np.log(p / q)))


def np_drop(row, k):
    return np.concatenate([row[:k], row[k + 1:]])


# ----------------------------------------------------------------------------- hand values


def test_kd_hand_value():
    T = 2.0
    rows = [np_kl(np_softmax(ZT[i] / T), np_softmax(ZS[i] / T)) for i in range(2)]
    expected = T * T * (rows[0] + rows[1]) / 2
    assert L.kd_loss(t(ZS), t(ZT), T).item() == pytest.approx(expected, rel=1e-10)


def _np_tckd_nckd(zs, zt, y, T):
    ps, pt = np_softmax(zs / T), np_softmax(zt / T)
    bs, bt = np.array([ps[y], 1 - ps[y]]), np.array([pt[y], 1 - pt[y]])
    tckd = np_kl(bt, bs)
    nckd = np_kl(np_softmax(np_drop(zt, y) / T), np_softmax(np_drop(zs, y) / T))
    return tckd, nckd, pt[y], ps[y]


def test_dkd_hand_value():
    T, a, b = 2.0, 1.5, 3.0
    vals = [_np_tckd_nckd(ZS[i], ZT[i], Y[i], T) for i in range(2)]
    expected = T * T * np.mean([a * tc + b * nc for tc, nc, _, _ in vals])
    got = L.dkd_loss(t(ZS), t(ZT), torch.tensor(Y), a, b, T).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_nkd_hand_value():
    T, gamma = 3.0, 1.5
    total = 0.0
    for i in range(2):
        ps, pt = np_softmax(ZS[i]), np_softmax(ZT[i])
        target = -pt[Y[i]] * math.log(ps[Y[i]])
        qs = np_softmax(np_drop(ZS[i], Y[i]) / T)
        qt = np_softmax(np_drop(ZT[i], Y[i]) / T)
        total += target - gamma * T * T * float(np.sum(qt * np.log(qs)))
    got = L.nkd_loss(t(ZS), t(ZT), torch.tensor(Y), T, gamma).item()
    assert got == pytest.approx(total / 2, rel=1e-10)


def test_dist_hand_value():
    tau, beta, gamma = 2.0, 1.0, 2.0
    ys, yt = np_softmax(ZS / tau), np_softmax(ZT / tau)
    inter = 1 - np.mean([np.corrcoef(ys[i], yt[i])[0, 1] for i in range(2)])
    intra = 1 - np.mean([np.corrcoef(ys[:, c], yt[:, c])[0, 1] for c in range(4)])
    expected = tau ** 2 * (beta * inter + gamma * intra)
    assert L.dist_loss(t(ZS), t(ZT), tau, beta, gamma).item() == pytest.approx(expected, rel=1e-9)


def test_standardize_hand_value():
    z = ZS[0]
    expected = (z - z.mean()) / (np.std(z, ddof=1) + 1e-7)
    np.testing.assert_allclose(L.standardize_logits(t(ZS)).numpy()[0], expected, rtol=1e-12)


def test_mld_hand_value():
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    ps, pt = sig(ZS), sig(ZT)
    kl = pt * np.log(pt / ps) + (1 - pt) * np.log((1 - pt) / (1 - ps))
    expected = kl.sum() / 2
    assert L.mld_loss(t(ZS), t(ZT)).item() == pytest.approx(expected, rel=1e-10)


def test_aekt_hand_value():
    T, clip = 2.0, 1.2
    rows = []
    for i in range(2):
        tckd, nckd, pt_y, ps_y = _np_tckd_nckd(ZS[i], ZT[i], Y[i], T)
        w = min(max(pt_y / ps_y, 0.0), clip)
        rows.append(w * tckd + (1 - pt_y) * nckd)
    expected = T * T * np.mean(rows)
    got = L.aekt_loss(t(ZS), t(ZT), torch.tensor(Y), T, clip).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_fitnet_and_nd_hand_values():
    fs = np.array([[1.0, 2.0], [3.0, -1.0]])
    ft = np.array([[0.0, 2.0], [1.0, 1.0]])
    assert L.fitnet_loss(t(fs), t(ft)).item() == pytest.approx(np.mean((fs - ft) ** 2))
    means = np.array([[2.0, 0.0], [0.0, 3.0]])  # unit centres: e1, e2
    y = np.array([1, 0])
    c = means[y] / np.linalg.norm(means[y], axis=1, keepdims=True)
    rows = [1 - fs[i] @ c[i] / max(np.linalg.norm(fs[i]), np.linalg.norm(ft[i])) for i in range(2)]
    got = L.nd_loss(t(fs), t(ft), torch.tensor(y), t(means)).item()
    assert got == pytest.approx(np.mean(rows), rel=1e-10)


def test_at_hand_value():
    rng = np.random.default_rng(0)
    fs, ft = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 5, 2, 2))
    fs_pooled = fs.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))  # 4×4 → 2×2 average pool

    def amap(f):
        a = (f ** 2).mean(axis=1).reshape(2, -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    expected = np.mean((amap(fs_pooled) - amap(ft)) ** 2)
    assert L.at_loss([t(fs)], [t(ft)], 2.0).item() == pytest.approx(expected, rel=1e-9)


def test_rkd_hand_value():
    rng = np.random.default_rng(1)
    fs, ft = rng.normal(size=(4, 3)), rng.normal(size=(4, 5))

    def dist(e):
        d = np.linalg.norm(e[:, None] - e[None], axis=2)
        return d / d[d > 0].mean()

    def angle(e):
        v = e[None] - e[:, None]  # v[i, j] = e_j - e_i
        n = np.linalg.norm(v, axis=2, keepdims=True)
        v = np.divide(v, n, out=np.zeros_like(v), where=n > 0)
        return np.einsum("ijk,ilk->ijl", v, v).ravel()

    def smooth_l1(a, b):
        d = np.abs(a - b)
        return np.mean(np.where(d < 1, 0.5 * d ** 2, d - 0.5))

    expected = 25 * smooth_l1(dist(fs), dist(ft)) + 50 * smooth_l1(angle(fs), angle(ft))
    assert L.rkd_loss(t(fs), t(ft), 25.0, 50.0).item() == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- identities


def test_identical_logits_give_zero():
    z = t(ZS)
    assert L.kd_loss(z, z, 4.0).item() == pytest.approx(0.0, abs=1e-12)
    assert L.dkd_loss(z, z, torch.tensor(Y), 1.0, 8.0, 4.0).item() == pytest.approx(0.0, abs=1e-12)
    assert L.dist_loss(z, z, 4.0, 1.0, 1.0).item() == pytest.approx(0.0, abs=1e-9)
    assert L.mld_loss(z, z).item() == pytest.approx(0.0, abs=1e-12)
    f = t(np.random.default_rng(2).normal(size=(5, 6)))
    assert L.rkd_loss(f, f).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_decomposition_tckd_plus_weighted_nckd_is_kd(T):
    """KD = TCKD + (1 − p_t,y)·NCKD per sample (the DKD paper's decomposition)."""
    rng = np.random.default_rng(3)
    zs, zt = rng.normal(size=(6, 7)) * 2, rng.normal(size=(6, 7)) * 2
    y = rng.integers(0, 7, size=6)
    for i in range(6):
        s, te, yi = t(zs[i:i + 1]), t(zt[i:i + 1]), torch.tensor(y[i:i + 1])
        pt_y = np_softmax(zt[i] / T)[y[i]]
        dkd = L.dkd_loss(s, te, yi, alpha=1.0, beta=1.0 - pt_y, temperature=T).item()
        assert dkd == pytest.approx(L.kd_loss(s, te, T).item(), rel=1e-9)


def test_standardized_losses_invariant_to_affine_logits():
    rng = np.random.default_rng(4)
    zs, zt, y = t(rng.normal(size=(5, 6))), t(rng.normal(size=(5, 6))), torch.tensor([0, 1, 2, 3, 4])
    std = L.standardize_logits

    def all_losses(a, b):
        a, b = std(a), std(b)
        return [L.kd_loss(a, b, 2.0), L.dkd_loss(a, b, y, 1.0, 8.0, 2.0),
                L.nkd_loss(a, b, y, 2.0, 1.5), L.dist_loss(a, b, 2.0, 1.0, 1.0)]

    base = all_losses(zs, zt)
    moved = all_losses(3.0 * zs + 7.0, 0.5 * zt - 2.0)
    for x0, x1 in zip(base, moved):
        assert x1.item() == pytest.approx(x0.item(), rel=1e-6)


def _all_loss_values(zs, zt, y):
    n = zs.shape[0]
    fs = zs.repeat(1, 2)
    ft = zt.repeat(1, 2)
    maps_s = zs[:, :4].reshape(n, 1, 2, 2).repeat(1, 2, 2, 2)
    maps_t = zt[:, :4].reshape(n, 1, 2, 2).repeat(1, 3, 1, 1)
    return {
        "kd": L.kd_loss(zs, zt, 4.0),
        "dkd": L.dkd_loss(zs, zt, y, 1.0, 8.0, 4.0),
        "nkd": L.nkd_loss(zs, zt, y, 3.0, 3.5),
        "dist": L.dist_loss(zs, zt, 4.0, 1.0, 1.0),
        "mld": L.mld_loss(zs, zt),
        "aekt": L.aekt_loss(zs, zt, y, 4.0, 10.0),
        "ls_kd": L.kd_loss(L.standardize_logits(zs), L.standardize_logits(zt), 2.0),
        "fitnet": L.fitnet_loss(fs, ft),
        "at": L.at_loss([maps_s], [maps_t], 2.0),
        "nd": L.nd_loss(fs, ft, y, torch.eye(fs.shape[1], dtype=zs.dtype)[: zs.shape[1]]),
        "rkd": L.rkd_loss(fs, ft),
    }


def test_batchmean_doubling_the_batch_leaves_the_loss_unchanged():
    rng = np.random.default_rng(5)
    zs, zt = t(rng.normal(size=(4, 5))), t(rng.normal(size=(4, 5)))
    y = torch.tensor([0, 1, 2, 3])
    one = _all_loss_values(zs, zt, y)
    two = _all_loss_values(torch.cat([zs, zs]), torch.cat([zt, zt]), torch.cat([y, y]))
    for name in one:
        if name == "rkd":  # relational: copies add zero-distance pairs, so not batch-invariant
            continue
        assert two[name].item() == pytest.approx(one[name].item(), rel=1e-9), name


@pytest.mark.filterwarnings("ignore:reduction")
def test_kd_is_not_divided_by_the_number_of_classes():
    rng = np.random.default_rng(6)
    zs, zt = t(rng.normal(size=(3, 10))), t(rng.normal(size=(3, 10)))
    lp_s = torch.log_softmax(zs / 4, 1)
    p_t = torch.softmax(zt / 4, 1)
    mean_version = torch.nn.KLDivLoss()(lp_s, p_t) * 16  # 'mean' divides by N·C
    assert L.kd_loss(zs, zt, 4.0).item() == pytest.approx(mean_version.item() * 10, rel=1e-9)


def test_every_loss_finite_with_finite_grads_for_overconfident_student_float32():
    n, c = 4, 6
    zs = torch.zeros(n, c)
    zs[torch.arange(n), torch.tensor([0, 1, 2, 3])] = 120.0  # 120 above the rest
    zt = torch.randn(n, c, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([5, 4, 2, 0])  # mostly not the class the student is sure of
    zs.requires_grad_(True)
    for name, value in _all_loss_values(zs, zt, y).items():
        assert torch.isfinite(value), name
        (grad,) = torch.autograd.grad(value, zs, allow_unused=True)
        assert grad is not None and torch.isfinite(grad).all(), name
    # the standardized path with the student's own std of a one-hot-like row
    value = L.dkd_loss(L.standardize_logits(zs), L.standardize_logits(zt), y, 1.0, 8.0, 2.0)
    (grad,) = torch.autograd.grad(value, zs)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_teacher_gets_no_gradient():
    zs, zt = t(ZS, grad=True), t(ZT, grad=True)
    L.kd_loss(zs, zt, 4.0).backward()
    assert zt.grad is None and zs.grad is not None


def test_registry_lists_every_loss_with_info():
    names = L.LOSSES.names()
    for n in ("kd", "dkd", "nkd", "dist", "aekt", "dual_head", "mld", "fitnet", "at", "rkd", "nd"):
        assert n in names
        info = L.LOSSES.get(n)
        assert info.name == n and info.kind in ("logit", "feature", "relational")
    assert L.LOSSES.get("kd").defaults["temperature"] == 4.0
    assert L.LOSSES.get("dkd").defaults["beta"] == 8.0
    assert L.LOSSES.get("dkd").needs_labels and not L.LOSSES.get("kd").needs_labels
    assert "interpretation" in L.aekt_loss.__doc__
    from edgekd.errors import BadInputError

    with pytest.raises(BadInputError, match="did you mean 'dkd'"):
        L.LOSSES.get("dkdd")
