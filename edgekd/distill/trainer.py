"""The training loop: distillation and plain training, checkpoints, exact resume, DDP.

``fit(student, criterion, bundle, config, out_dir)`` trains ``student`` with ``criterion``
(edgekd.distill.criterion; "ce" is plain training) on ``bundle`` (edgekd.data.DataBundle).
What it guarantees:

- every epoch is validated (``eval_every``) and logged to ``out_dir/train.jsonl``;
- ``out_dir/checkpoints/last.pt`` and ``best.pt`` are full training states (student, criterion
  extras, optimizer, schedule position, RNG states of torch/numpy/python, sampler position),
  written atomically; ``resume=True`` continues bit-exactly on CPU, even from the middle of an
  epoch;
- ``grad_clip`` rescales the gradients of all trained parameters together (one global L2 norm)
  after backward and, under DDP, after they are averaged, so every rank clips alike;
- SIGINT/SIGTERM finish the current batch, save ``last`` and raise WorkInterrupted (exit 130);
- under torchrun (RANK/WORLD_SIZE set) it runs data-parallel: a DistributedSampler shards each
  epoch, gradients are averaged across ranks, validation is all-reduced and only rank 0 writes.

Every batch's randomness (shuffling, augmentation) is derived from (seed, epoch, batch, rank),
never from hidden iterator state, which is what makes resuming exact.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..accuracy import count_correct
from ..errors import BadInputError, WorkInterrupted
from ..util_io import atomic_write_text
from .loop import (StopFlag, as_float, batch_seed, clean_num, clip_grads, epoch_batches,
                   evaluate, lr_at, make_optimizer, pad_crop, progress_bar)
from .progress import EpochLog, warn_if_near_chance
from .runstate import (STATE_FORMAT, STATE_VERSION, allreduce_sum, atomic_torch_save,
                       average_grads, broadcast_module, dist_info, load_state, restore_weights,
                       rng_state, seed_everything, set_rng_state, setup_dist)
from .train_config import (DEFAULT_LR, Augment, Device, Optimizer, Schedule, TrainConfig,
                           check_resume_config)

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "fit", "seed_everything", "restore_weights", "load_state",
           "dist_info", "pad_crop", "Optimizer", "Schedule", "Augment", "Device", "DEFAULT_LR"]


@dataclass
class TrainResult:
    best_acc: float
    last_acc: float
    best_epoch: int
    history: list[dict]
    paths: dict[str, Path] = field(default_factory=dict)
    cache: str = "off"

    def to_dict(self) -> dict:
        return {"best_acc": self.best_acc, "last_acc": self.last_acc,
                "best_epoch": self.best_epoch, "epochs": len(self.history), "cache": self.cache,
                "paths": {k: str(v) for k, v in self.paths.items()}, "history": self.history}


# --------------------------------------------------------------------------- fit

def fit(student, criterion, bundle, config: TrainConfig | dict, out_dir: str | Path, *,
        teacher=None, resume: bool = False, progress: bool = True,
        log_json: bool = True) -> TrainResult:
    """Train ``student`` with ``criterion`` on ``bundle``; see the module docstring.

    ``teacher`` is needed when ``criterion.needs_teacher``. Returns a TrainResult whose
    ``paths`` hold ``last``, ``best`` (training states) and ``log`` (train.jsonl).
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig.make(**dict(config))
    if getattr(criterion, "needs_teacher", False) and teacher is None:
        raise BadInputError("this loss needs a teacher but none was given",
                            hint="pass --teacher, or use --loss ce for plain training")
    rank, world, dev, created = setup_dist(config.device.value)
    try:
        with StopFlag() as stop:
            return _fit(student, criterion, bundle, config, Path(out_dir), teacher, resume,
                        progress and rank == 0, log_json, rank, world, dev, stop)
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _teacher_source(criterion, teacher, bundle, config, rank, world, dev):
    """('hit'|'miss'|'live'|'off', LogitCache or None)."""
    from .cache import teacher_logit_cache

    if not getattr(criterion, "needs_teacher", False):
        return "off", None
    fixed_view = config.augment is Augment.none
    if not (fixed_view and config.use_cache) or getattr(criterion, "needs_teacher_features", False):
        return "live", None
    kw = dict(teacher_fingerprint=getattr(teacher, "fingerprint", None),
              data_fingerprint=getattr(bundle, "fingerprint", None),
              transform=f"fixed-view;input={tuple(getattr(bundle, 'input_shape', ()))}",
              num_classes=getattr(bundle, "num_classes", None),
              batch_size=max(256, config.batch_size), device=dev)
    cache = None
    if rank == 0:
        cache = teacher_logit_cache(teacher, bundle.train, **kw)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank != 0:
            cache = teacher_logit_cache(teacher, bundle.train, **kw)
    if cache.logits.shape[0] != len(bundle.train):
        raise BadInputError("the teacher-logit cache does not match the train set",
                            hint=f"delete {cache.path}")
    return ("hit" if cache.hit else "miss"), cache


def _fit(student, criterion, bundle, config, out_dir, teacher, resume, show, log_json,
         rank, world, dev, stop) -> TrainResult:
    import torch

    from .cache import IndexedDataset

    ckpt = out_dir / "checkpoints"
    paths = {"last": ckpt / "last.pt", "best": ckpt / "best.pt", "log": out_dir / "train.jsonl"}
    writer = rank == 0
    student.to(dev)
    criterion.to(dev)
    tmod = getattr(teacher, "module", None) if teacher is not None else None
    if tmod is not None:
        tmod.to(dev).eval()
        if hasattr(teacher, "device"):  # edgekd Teacher moves inputs to its own device
            teacher.device = dev

    needs_teacher = bool(getattr(criterion, "needs_teacher", False))
    labelled = getattr(bundle, "labelled_indices", None)
    subset = None
    if not needs_teacher and labelled is not None and len(labelled) < len(bundle.train):
        subset = list(labelled)  # plain training sees only the labelled samples
    ds = IndexedDataset(bundle.train, subset)
    if len(ds) < 2:
        raise BadInputError(f"the train set has {len(ds)} usable samples",
                            hint="use more data or a larger --labelled-fraction")

    def teacher_fn(x):
        with torch.no_grad():
            out = teacher(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return torch.as_tensor(out).detach().to(dev).float()

    cache_mode, cache = _teacher_source(criterion, teacher, bundle, config, rank, world, dev)
    if hasattr(criterion, "prepare"):
        loader = torch.utils.data.DataLoader(bundle.train, batch_size=256, shuffle=False)
        criterion.prepare(teacher_fn if teacher is not None else None, loader)
    if stop.flag:
        raise WorkInterrupted("interrupted before training started; nothing to save")

    teacher_ids = {id(p) for p in tmod.parameters()} if tmod is not None else set()
    params, seen = [], set(teacher_ids)
    for p in list(student.parameters()) + list(criterion.parameters()):
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    opt = make_optimizer(config, params)
    cfg_dump = config.model_dump(mode="json")

    st = {"epoch": 0, "batch": 0, "step": 0, "history": [], "best_acc": -1.0, "best_epoch": 0,
          "last_acc": float("nan"), "accum": None}
    seed_everything(config.seed + 7919 * rank)  # dropout & co.; replaced by the state on resume
    if resume and paths["last"].exists():
        state = load_state(paths["last"])
        check_resume_config(state.get("config", {}), cfg_dump, paths["last"])
        if state.get("world", 1) != world:
            raise BadInputError(f"the saved run used {state.get('world')} processes, this one "
                                f"{world}", hint="resume with the same number of processes")
        student.load_state_dict(state["student"])
        if state.get("criterion"):
            criterion.load_state_dict(state["criterion"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"] if world == 1 else state["rng_ranks"][rank])
        for k in st:
            st[k] = state[k]
        log.info("resuming at epoch %d batch %d from %s", st["epoch"] + 1, st["batch"],
                 paths["last"])
    if world > 1:
        broadcast_module(student, dev)
        broadcast_module(criterion, dev)

    def snapshot() -> dict:
        rng = rng_state()
        rng_ranks = None
        if world > 1:
            import torch.distributed as dist

            rng_ranks = [None] * world
            dist.all_gather_object(rng_ranks, rng)
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "config": cfg_dump,
                "world": world, "student": student.state_dict(),
                "criterion": criterion.state_dict(), "optimizer": opt.state_dict(),
                "rng": rng, "rng_ranks": rng_ranks, **st}

    def write_log() -> None:
        if writer and log_json:
            atomic_write_text(paths["log"], "".join(json.dumps(r) + "\n" for r in st["history"]))

    n_steps = len(epoch_batches(len(ds), config, 0, rank, world))
    pad = max(1, int(getattr(bundle, "input_shape", (0, 16))[-1]) // 8)
    bar = progress_bar(show)
    if bar is not None:
        bar.start()
    lines = EpochLog(config.epochs) if show and bar is None else None  # stderr is not a terminal
    try:
        while st["epoch"] < config.epochs:
            e = st["epoch"]
            batches = epoch_batches(len(ds), config, e, rank, world)
            acc = st["accum"] or {"loss": 0.0, "n": 0, "correct": 0, "labelled": 0,
                                  "parts": {}, "time": 0.0, "cpu": 0.0, "lr": config.lr}
            task = bar.add_task(f"epoch {e + 1}/{config.epochs}", total=len(batches),
                                completed=st["batch"], info="") if bar is not None else None
            student.train()
            criterion.train()
            t0, c0 = time.perf_counter(), time.process_time()
            for b in range(st["batch"], len(batches)):
                x, y, idx = ds.batch(batches[b])
                if config.augment is Augment.padcrop:
                    g = torch.Generator().manual_seed(batch_seed(config.seed, e, b, rank))
                    x = pad_crop(x, pad, g)
                x, y = x.to(dev), y.to(dev)
                t_logits = None
                if cache is not None:
                    t_logits = cache.lookup(idx).to(dev)
                elif needs_teacher:
                    t_logits = teacher_fn(x)
                lr = lr_at(config, st["step"], n_steps)
                for group in opt.param_groups:
                    group["lr"] = lr
                out = student(x)
                loss, parts = criterion(out, t_logits, y, e)  # epochs counted from 0 (criterion contract)
                if not torch.isfinite(loss):
                    raise BadInputError(f"the loss became {float(loss)} at epoch {e + 1} batch "
                                        f"{b + 1}", hint=f"lower --lr (now {config.lr})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if world > 1:
                    average_grads(params, world)
                if config.grad_clip is not None:
                    norm = clip_grads(params, config.grad_clip, e, b)
                    acc["grad_norm_max"] = max(acc.get("grad_norm_max", 0.0), norm)
                    acc["clipped"] = acc.get("clipped", 0) + int(norm > config.grad_clip)
                opt.step()
                st["step"] += 1
                n = int(y.shape[0])
                correct, labelled = count_correct(out, y)
                acc["loss"] += float(loss.detach()) * n
                acc["n"] += n
                acc["correct"] += correct
                acc["labelled"] += labelled
                acc["lr"] = lr
                for k, v in (parts or {}).items():
                    acc["parts"][k] = acc["parts"].get(k, 0.0) + as_float(v) * n
                if task is not None:
                    bar.update(task, advance=1, info=f"loss {acc['loss'] / acc['n']:.4f} "
                               f"acc {acc['correct'] / max(1, acc['labelled']):.3f}")
                halt = stop.flag
                if world > 1:
                    halt = allreduce_sum([float(halt)], dev)[0] > 0
                if halt:
                    acc["time"] += time.perf_counter() - t0
                    acc["cpu"] += time.process_time() - c0
                    st["batch"], st["accum"] = b + 1, acc
                    state = snapshot()
                    if writer:
                        atomic_torch_save(state, paths["last"])
                    raise WorkInterrupted(
                        f"training interrupted at epoch {e + 1} batch {b + 1}; state saved to "
                        f"{paths['last']}", hint="continue with --resume")
            acc["time"] += time.perf_counter() - t0
            acc["cpu"] += time.process_time() - c0
            if world > 1:
                broadcast_module(student, dev, buffers_only=True)  # one set of BN statistics
                broadcast_module(criterion, dev, buffers_only=True)
                keys = sorted(acc["parts"])
                tot = allreduce_sum([acc["loss"], acc["n"], acc["correct"], acc["labelled"]]
                                    + [acc["parts"][k] for k in keys], dev)
                acc["loss"], acc["n"], acc["correct"], acc["labelled"] = tot[:4]
                acc["parts"] = dict(zip(keys, tot[4:]))
            val_acc, val_time = float("nan"), 0.0
            if (e + 1) % config.eval_every == 0 or e + 1 == config.epochs:
                t1 = time.perf_counter()
                model = criterion.deployable(student) if hasattr(criterion, "deployable") else student
                val_acc = evaluate(model, bundle.val, dev, max(256, config.batch_size), rank, world)
                val_time = time.perf_counter() - t1
                st["last_acc"] = val_acc
            rec = {"epoch": e + 1, "lr": acc["lr"],
                   "train_loss": clean_num(acc["loss"] / max(1, acc["n"])),
                   "train_acc": (acc["correct"] / acc["labelled"]) if acc["labelled"] else None,
                   "val_acc": clean_num(val_acc),
                   "parts": {k: v / max(1, acc["n"]) for k, v in acc["parts"].items()},
                   "train_time_s": round(acc["time"], 4),
                   "train_cpu_s": round(acc.get("cpu", 0.0), 4), "val_time_s": round(val_time, 4),
                   "samples": int(acc["n"]), "cache": cache_mode, "world": world}
            if config.grad_clip is not None:  # how often the clip acted, and the largest norm
                rec["clipped_steps"] = int(acc.get("clipped", 0))
                rec["grad_norm_max"] = round(float(acc.get("grad_norm_max", 0.0)), 4)
            st["history"].append(rec)
            improved = math.isfinite(val_acc) and val_acc > st["best_acc"]
            if improved:
                st["best_acc"], st["best_epoch"] = val_acc, e + 1
            st["epoch"], st["batch"], st["accum"] = e + 1, 0, None
            state = snapshot()
            if writer:
                if improved:
                    atomic_torch_save(state, paths["best"])
                atomic_torch_save(state, paths["last"])
                write_log()
            if task is not None:
                bar.update(task, info=f"loss {rec['train_loss']:.4f} val {val_acc:.3f}")
            elif lines is not None:
                lines.epoch(e + 1, rec["train_loss"], rec["train_acc"], val_acc)
            else:
                log.info("epoch %d/%d loss %.4f val_acc %.4f (%.2fs)", e + 1, config.epochs,
                         rec["train_loss"] or float("nan"), val_acc, acc["time"])
    finally:
        if bar is not None:
            bar.stop()
    write_log()
    if rank == 0:
        warn_if_near_chance(st["best_acc"], getattr(bundle, "num_classes", None), config.epochs)
    return TrainResult(best_acc=st["best_acc"], last_acc=st["last_acc"],
                       best_epoch=st["best_epoch"], history=st["history"], paths=paths,
                       cache=cache_mode)
