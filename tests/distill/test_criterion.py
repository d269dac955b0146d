"""The criterion the trainer calls, and feature taps."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from edgekd.distill import losses as L
from edgekd.distill.criterion import build_criterion
from edgekd.distill.taps import FeatureTaps, penultimate_path
from edgekd.errors import BadInputError

C = 5


class Net(nn.Module):
    def __init__(self, w: int = 4, classes: int = C):
        super().__init__()
        self.stem = nn.Conv2d(3, w, 3, padding=1)
        self.layer1 = nn.Sequential(nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU())
        self.layer3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, classes)

    def forward(self, x):
        h = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(h).flatten(1))


@pytest.fixture
def nets():
    torch.manual_seed(0)
    return Net(4), Net(8).eval()


def batch(n=6):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g), torch.tensor([0, 1, 2, -1, 4, -1][:n])


def step(crit, student, teacher, x, y, epoch=0):
    zs = student(x)
    with torch.no_grad():
        zt = teacher(x) if crit.needs_teacher else None
    return crit(zs, zt, y, epoch)


ALL = ["ce", "kd", "dkd", "nkd", "dist", "aekt", "dual_head", "mld", "fitnet", "at", "rkd", "nd"]


@pytest.mark.parametrize("name", ALL)
def test_every_loss_trains_one_step(nets, name):
    student, teacher = nets
    crit = build_criterion(name, None, num_classes=C, student=student, teacher=teacher, epochs=3)
    x, y = batch()
    if name == "nd":
        crit.prepare(teacher, [(x, y)])
    loss, parts = step(crit, student, teacher, x, y)
    assert torch.isfinite(loss) and parts["total"] == pytest.approx(loss.item())
    loss.backward()
    grads = [p.grad for p in list(student.parameters()) + list(crit.parameters())]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in teacher.parameters())
    assert crit.needs_teacher == (name != "ce")
    assert crit.needs_teacher_features == (name in ("fitnet", "at", "rkd", "nd"))
    # the student and teacher are never part of the criterion's state
    assert not any(k.startswith(("_student", "_teacher")) for k in crit.state_dict())
    crit.close()


def test_kd_total_is_weighted_sum(nets):
    student, teacher = nets
    crit = build_criterion("kd", None, num_classes=C, student=student, teacher=teacher, epochs=1)
    assert crit.options == {"temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9, "ls": False}
    x, y = batch()
    zs = student(x)
    zt = teacher(x).detach()
    loss, parts = crit(zs, zt, y, 0)
    lab = y >= 0
    ce = nn.functional.cross_entropy(zs[lab], y[lab])
    expected = 0.1 * ce + 0.9 * L.kd_loss(zs, zt, 4.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) >= {"ce", "kd", "total"}


def test_options_are_parsed_from_strings_and_ls_defaults(nets):
    student, teacher = nets
    crit = build_criterion("dkd", {"beta": "2", "temperature": "1.5", "warmup": "5", "ls": "true"},
                           num_classes=C, student=student, teacher=teacher, epochs=10)
    assert crit.options["beta"] == 2.0 and crit.options["temperature"] == 1.5
    assert crit.options["warmup"] == 5 and crit.options["ls"] is True
    kd = build_criterion("kd", None, num_classes=C, student=student, teacher=teacher, epochs=1,
                         ls=True)
    assert (kd.options["temperature"], kd.options["w_kd"], kd.options["w_ce"]) == (2.0, 9.0, 0.1)
    kd3 = build_criterion("kd", {"temperature": 3}, num_classes=C, student=student,
                          teacher=teacher, epochs=1, ls=True)
    assert kd3.options["temperature"] == 3.0
    with pytest.raises(BadInputError, match="not a valid bool"):
        build_criterion("kd", {"ls": "maybe"}, num_classes=C, student=student, teacher=teacher,
                        epochs=1)
    with pytest.raises(BadInputError, match="does not apply"):
        build_criterion("rkd", None, num_classes=C, student=student, teacher=teacher, epochs=1,
                        ls=True)


def test_ls_makes_kd_invariant_to_affine_student_logits(nets):
    student, teacher = nets
    crit = build_criterion("kd", {"ls": True}, num_classes=C, student=student, teacher=teacher,
                           epochs=1)
    zs, zt, y = torch.randn(4, C), torch.randn(4, C), torch.tensor([0, 1, 2, 3])
    a = crit(zs, zt, y)[1]["kd"]
    b = crit(2.0 * zs + 3.0, zt, y)[1]["kd"]
    assert b == pytest.approx(a, rel=1e-5)


def test_unknown_names_and_options_list_the_valid_ones(nets):
    student, teacher = nets
    with pytest.raises(BadInputError) as e:
        build_criterion("kdd", None, num_classes=C, student=student, teacher=teacher, epochs=1)
    msg = str(e.value)
    assert "'kdd'" in msg and "did you mean 'kd'" in msg
    assert all(n in msg for n in ("ce", "dkd", "dist", "nd"))
    with pytest.raises(BadInputError) as e:
        build_criterion("dkd", {"gama": 1}, num_classes=C, student=student, teacher=teacher,
                        epochs=1)
    assert "'gama'" in str(e.value) and "alpha" in str(e.value) and "beta" in str(e.value)
    with pytest.raises(BadInputError, match="needs a teacher"):
        build_criterion("kd", None, num_classes=C, student=student, teacher=None, epochs=1)
    crit = build_criterion("kd", None, num_classes=C, student=student, teacher=teacher, epochs=1)
    with pytest.raises(BadInputError, match="teacher logits"):
        crit(torch.randn(2, C), None, torch.tensor([0, 1]), 0)


def test_unlabelled_rows_ce_ignores_them_and_kd_terms_use_teacher_argmax(nets):
    student, teacher = nets
    zs, zt = torch.randn(4, C), torch.randn(4, C)
    none = torch.full((4,), -1)
    ce = build_criterion("ce", None, num_classes=C, student=student, teacher=None, epochs=1)
    loss, parts = ce(zs.requires_grad_(), None, none, 0)
    assert loss.item() == 0.0 and parts["ce"] == 0.0
    loss.backward()  # a graph, no NaN
    assert torch.isfinite(zs.grad).all()
    y = torch.tensor([1, -1, 3, -1])
    y_filled = torch.where(y >= 0, y, zt.argmax(1))
    for name in ("dkd", "nkd", "aekt"):
        crit = build_criterion(name, {"w_ce": 0.0}, num_classes=C, student=student,
                               teacher=teacher, epochs=1)
        a = crit(zs, zt, y, 100)[1]["kd"]
        b = crit(zs, zt, y_filled, 100)[1]["kd"]
        assert a == pytest.approx(b, rel=1e-6), name
    dkd = build_criterion("dkd", None, num_classes=C, student=student, teacher=teacher, epochs=1)
    assert dkd(zs, zt, none, 0)[1]["ce"] == 0.0


def test_warmup_scales_with_short_runs(nets):
    student, teacher = nets
    zs, zt, y = torch.randn(2, C), torch.randn(2, C), torch.tensor([0, 1])
    long = build_criterion("dkd", None, num_classes=C, student=student, teacher=teacher, epochs=240)
    assert [long(zs, zt, y, e)[1]["warmup"] for e in (0, 9, 19, 100)] == [0.05, 0.5, 1.0, 1.0]
    short = build_criterion("dkd", None, num_classes=C, student=student, teacher=teacher, epochs=6)
    assert [short(zs, zt, y, e)[1]["warmup"] for e in range(6)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0])
    off = build_criterion("dkd", {"warmup": 0}, num_classes=C, student=student, teacher=teacher,
                          epochs=6)
    assert off(zs, zt, y, 0)[1]["warmup"] == 1.0


def test_extra_modules_are_criterion_parameters_and_not_deployed(nets):
    student, teacher = nets
    x, y = batch()
    student_params = {id(p) for p in student.parameters()}
    for name, extra in (("aekt", "serial"), ("fitnet", "regressor"), ("dual_head", "head2")):
        crit = build_criterion(name, None, num_classes=C, student=student, teacher=teacher,
                               epochs=1)
        own = list(crit.parameters())
        assert own and all(id(p) not in student_params for p in own)
        assert any(k.startswith(extra + ".") for k in crit.state_dict())
        deployed = crit.deployable(student)
        deployed_ids = {id(p) for p in deployed.parameters()}
        assert not deployed_ids & {id(p) for p in own}
        assert sum(p.numel() for p in deployed.parameters()) == sum(
            p.numel() for p in student.parameters())
        crit.close()
    aekt = build_criterion("aekt", None, num_classes=C, student=student, teacher=teacher, epochs=1)
    assert aekt.deployable(student) is student


def test_dual_head_fold_equals_mixed_logits(nets):
    student, teacher = nets
    crit = build_criterion("dual_head", {"lam": "0.3"}, num_classes=C, student=student,
                           teacher=teacher, epochs=1)
    x, y = batch()
    loss, _ = step(crit, student, teacher, x, y)
    loss.backward()
    student.eval()
    with torch.no_grad():
        mixed = crit.student_logits_for_eval(student(x))
        folded = crit.deployable(student)
        out = folded(x)
    torch.testing.assert_close(out, mixed, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, student(x))  # the fold really changed the head
    # the folded copy carries none of the criterion's hooks
    assert all(not m._forward_pre_hooks for m in folded.modules())
    crit.close()


def test_nd_prepare_computes_teacher_class_means(nets):
    student, teacher = nets
    crit = build_criterion("nd", None, num_classes=C, student=student, teacher=teacher, epochs=1)
    x, y = batch()
    with pytest.raises(BadInputError, match="prepare"):
        step(crit, student, teacher, x, y)
    crit.prepare(teacher, [(x[:3], y[:3]), (x[3:], y[3:])])
    with torch.no_grad():
        zt = teacher(x)
        feats = teacher.pool(teacher.layer3(teacher.layer2(teacher.layer1(teacher.stem(x))))).flatten(1)
    filled = torch.where(y >= 0, y, zt.argmax(1))
    for c in range(C):
        if (filled == c).any():
            torch.testing.assert_close(crit.class_means[c], feats[filled == c].mean(0))
    assert "class_means" in crit.state_dict() and "proj.weight" in crit.state_dict()
    step(crit, student, teacher, x, y)[0].backward()
    crit.close()


def test_close_removes_hooks(nets):
    student, teacher = nets
    crit = build_criterion("rkd", None, num_classes=C, student=student, teacher=teacher, epochs=1)
    assert student.fc._forward_pre_hooks and teacher.fc._forward_pre_hooks
    crit.close()
    assert not student.fc._forward_pre_hooks and not teacher.fc._forward_pre_hooks


def test_feature_loss_without_teacher_forward_says_what_to_do(nets):
    student, teacher = nets
    crit = build_criterion("at", None, num_classes=C, student=student, teacher=teacher, epochs=1)
    x, y = batch()
    with pytest.raises(BadInputError, match="teacher live"):
        crit(student(x), torch.randn(len(x), C), y, 0)
    crit.close()


def test_fitnet_and_at_layers_can_be_named(nets):
    student, teacher = nets
    crit = build_criterion("fitnet", {"student_layer": "layer1", "teacher_layer": "layer2"},
                           num_classes=C, student=student, teacher=teacher, epochs=1)
    x, y = batch()
    step(crit, student, teacher, x, y)[0].backward()  # 3×3 stride-2 regressor 8×8 → 4×4
    assert isinstance(crit.regressor[0], nn.Conv2d) and crit.regressor[0].stride == (2, 2)
    crit.close()
    with pytest.raises(BadInputError, match="nearest module names: layer2"):
        build_criterion("at", {"student_layers": "layer_2", "teacher_layers": "layer2"},
                        num_classes=C, student=student, teacher=teacher, epochs=1)
    assert not any(m._forward_hooks for m in student.modules())


# ----------------------------------------------------------------------------- taps


def test_feature_taps_capture_clear_remove(nets):
    student, _ = nets
    x, _ = batch(2)
    with FeatureTaps(student, ["layer2", "fc:input"]) as taps:
        student(x)
        assert taps.features["layer2"].shape == (2, 8, 4, 4)
        assert taps["fc:input"].shape == (2, 16)
        taps.clear()
        assert taps.features == {}
    assert not student.layer2._forward_hooks and not student.fc._forward_pre_hooks
    assert penultimate_path(student) == "fc:input"


def test_feature_taps_unknown_path_lists_near_names(nets):
    student, _ = nets
    with pytest.raises(BadInputError) as e:
        FeatureTaps(student, ["layer1", "layr2.0"])
    msg = str(e.value)
    assert "'layr2.0'" in msg and "layer2.0" in msg
    assert not student.layer1._forward_hooks  # the hooks already added were removed
    with pytest.raises(BadInputError, match="no nn.Linear"):
        penultimate_path(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_T_is_an_alias_for_the_temperature(nets):
    student, teacher = nets
    kd = build_criterion("kd", {"T": "3"}, num_classes=C, student=student, teacher=teacher,
                         epochs=1)
    dist = build_criterion("dist", {"T": 2}, num_classes=C, student=student, teacher=teacher,
                           epochs=1)
    assert kd.options["temperature"] == 3.0 and dist.options["tau"] == 2.0
