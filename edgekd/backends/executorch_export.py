"""torch module -> .pte for ExecuTorch: capture with torch.export, lower to XNNPACK, read the
memory plan back. Failures are one line of bad input naming what torch.export or ExecuTorch said."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

from ..errors import BadInputError
from ..models.ref import set_mode


class _DropImportNoise(logging.Filter):
    """torchao says at import that it could not load its CUDA kernels or find Triton, and torch
    warns about one of torchao's enums: none concerns a CPU target, and they bury edgekd's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Failed to load") or "register_constant" in msg or "no triton" in msg)


def quiet_import_noise() -> None:
    """Install the filter once on those loggers (before executorch or torchao is imported)."""
    for name in ("torchao", "torchao.kernel.intmm", "torch.utils._pytree"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _DropImportNoise) for f in lg.filters):
            lg.addFilter(_DropImportNoise())


def first_line(exc: BaseException, limit: int = 200) -> str:
    """What torch.export or ExecuTorch says, on one line: its first lines that say something."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    skip = ("Traceback", "from user code", "File \"", "Set TORCH_LOGS", "For more information")
    useful = [ln for ln in lines if not ln.startswith(skip)][:2]
    text = " ".join(useful) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _Named(module):
    """``module`` under one named attribute. ExecuTorch's batch-norm fusion looks up the fused
    weight by a name built from the parameter's, and fails when that name starts with a digit (an
    nn.Sequential's '0.weight' -> '0_weight_fused_bn' is not found); under 'body' every
    parameter's name starts with a letter."""
    import torch

    class Named(torch.nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(x)

    return Named(module).eval()


def capture(module, sample):
    """torch.export of ``module`` on ``sample``; a model it cannot capture is one-line bad input
    naming the op or graph break torch.export stopped at."""
    import torch

    set_mode(module, False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(_Named(module), (sample,), strict=False)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many unrelated types
        raise BadInputError(f"torch.export cannot capture the model for ExecuTorch "
                            f"({type(exc).__name__}: {first_line(exc)})",
                            hint="make the model exportable (no data-dependent control flow or "
                                 "untraceable ops), or use an ONNX target such as ort-cpu") from exc


def lower(exported, *, what: str = "the model") -> bytes:
    """An ExportedProgram lowered to XNNPACK and serialized: the .pte bytes."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
            return bytes(edge.to_executorch().buffer)
    except Exception as exc:  # noqa: BLE001 - exir raises many unrelated types
        raise BadInputError(f"ExecuTorch cannot lower {what} ({type(exc).__name__}: {first_line(exc)})",
                            hint="an op without an ExecuTorch kernel needs another target, such as ort-cpu") from exc


def planned_arena_bytes(pte: "bytes | Path") -> int | None:
    """The memory-planned arena of the 'forward' method (ExecuTorch's non-constant buffers),
    read from the program; None when the program does not say."""
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary

        data = Path(pte).read_bytes() if isinstance(pte, Path) else pte
        program = deserialize_pte_binary(data).program
        plan = next((p for p in program.execution_plan if p.name == "forward"), program.execution_plan[0])
        # buffer 0 is reserved for constants; the planned buffers follow
        return int(sum(plan.non_const_buffer_sizes[1:]))
    except Exception:  # noqa: BLE001 - an older or foreign program layout: no plan known
        return None
