"""hf- students train like edgekd's own: batch norm keeps running statistics over many batches
(transformers' MobileNetV2/EfficientNet momentum means "the last batch only" in PyTorch), and
the MobileNetV2 head is not starved by dropout 0.8."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from edgekd.models import build_model  # noqa: E402


@pytest.mark.parametrize("spec", ["hf-mobilenetv2:width=0.35,res=32",
                                  "hf-efficientnet:width=0.25,depth=0.25,res=32"])
def test_running_statistics_are_not_the_last_batch(spec):
    """After many training batches and then one small, odd batch (the tail of an epoch), every
    batch norm's running mean (what eval mode normalizes with) stays near the mean of its inputs
    over all batches, not the last batch's."""
    torch.manual_seed(0)
    model = build_model(spec, num_classes=5, in_channels=3).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen: dict = {}

    def record(module, inputs):
        seen.setdefault(module, []).append(inputs[0].detach().mean(dim=(0, 2, 3)))

    hooks = [bn.register_forward_pre_hook(record) for bn in bns]
    with torch.no_grad():
        for _ in range(60):  # the running mean forgets its start (0.9 ** 60 < 0.002)
            model(torch.randn(8, 3, 32, 32))
        model(torch.randn(2, 3, 32, 32) * 3.0 + 2.0)
    for h in hooks:
        h.remove()
    assert bns and all(len(seen[bn]) == 61 for bn in bns)
    for i, bn in enumerate(bns):
        overall = torch.stack(seen[bn][:-1]).mean(0)
        last = seen[bn][-1]
        to_overall = float((bn.running_mean - overall).norm())
        to_last = float((bn.running_mean - last).norm())
        assert to_overall < to_last, (f"batch norm {i} of {spec}: running mean is "
                                      f"{to_last:.3g} from the last batch's, {to_overall:.3g} "
                                      "from all batches'")


def test_mobilenetv2_head_dropout_is_small():
    model = build_model("hf-mobilenetv2:width=0.35,res=32", num_classes=5, in_channels=3)
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and max(drops) <= 0.2
