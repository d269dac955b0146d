"""What compress checks before it writes OUT/state.json or measures anything.

A run that would fail on its inputs fails here, in seconds, with the one-line message of the
check that caught it, and leaves OUT as it was: the output location can be written, the loss is
known, the data loads and has at least two classes and a validation split, the teacher loads
(a file that runs code only with --trust-code) and predicts the data's classes from its input
shape, and a feature loss has a torch teacher to take features from.

    validate_run(ctx)   raises BadInputError (exit 2), else returns None
"""
from __future__ import annotations

from ..errors import BadInputError
from .context import Context


def validate_run(ctx: Context) -> None:
    """Load and check everything the stages will need; see the module docstring."""
    from ..distill.options import loss_info
    from ..util_io import check_output_location

    cfg = ctx.cfg
    check_output_location(ctx.out, "--out", kind="dir")
    info = loss_info(cfg.loss)
    b = ctx.bundle
    if int(b.num_classes) < 2:
        raise BadInputError(f"data '{b.name}' has {b.num_classes} class; a classifier needs at least 2",
                            hint="give data with two or more classes")
    ctx.val_arrays()
    teacher = ctx.teacher  # loads it (code trust, weights) and checks it against the data
    if info.kind != "logit" and getattr(teacher, "module", None) is None:
        raise BadInputError(f"--loss {cfg.loss} takes features from the teacher, and '{cfg.teacher}' is no "
                            f"torch module", hint="use a logit loss (kd, dkd, nkd, dist) or a torch teacher")


def resolved_settings(config: dict) -> dict:
    """The settings of a config (CompressConfig, as JSON) with every local path made absolute,
    so that a run resumed from another directory, or with ./x for x, is recognised as the same."""
    from pathlib import Path

    out = dict(config)

    def resolve(text):
        if not isinstance(text, str) or not text:
            return text
        for prefix in ("folder:", "npz:", "hf:", ""):
            if text.startswith(prefix):
                rest = text[len(prefix):]
                p = Path(rest).expanduser()
                if rest and p.exists():
                    return prefix + str(p.resolve())
        return text

    for key in ("teacher", "teacher_weights", "data", "target", "grid"):
        if key in out:
            out[key] = resolve(out[key])
    return out
