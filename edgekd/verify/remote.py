"""`verify` on a remote target: accuracy, parity and latency all measured on the device.

What goes over (each file content-addressed under ``<workdir>/files/``, sha256-checked on
arrival, reused when already there):

- the artifact and its side files (an OpenVINO .bin, ONNX external data), in one folder;
- the validation split as ``val.npz`` (x_val/y_val, float32 as the runtime sees it), written
  here atomically under the edgekd cache, keyed by the arrays' content, so the same data gives
  the same file and a second verify finds it on the device already. The device needs neither
  the data source (folder:, py:) nor the resolution rules, only these arrays;
- the manifest.json when the artifact sits in a compress output: it is checked here first
  (nothing is copied for an artifact that left its manifest), and the device checks the copy
  it runs against it again, in the same layout as here;
- the torch student for ``--reference``: parity and the reference accuracy are computed on
  the device, which has torch because edgekd needs it.

Then `edgekd verify ... --json` runs there (in a fresh run folder holding links to those
files), and its JSON becomes the same VerifyReport a local verify returns, with the device's
fingerprint in ``latency.environment`` and ``remote`` saying where it ran.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError
from ..targets import TargetSpec

NPZ_NAME = "val.npz"
NPZ_SCHEMA = b"edgekd.remote-val/v1"


def val_npz(x: np.ndarray, y: np.ndarray) -> Path:
    """The validation arrays as an .npz in the cache, named by their content (written once, atomically)."""
    from ..util_io import cache_root
    from ..util_io import atomic_path

    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    h = hashlib.sha256(NPZ_SCHEMA)
    for a in (x, y):
        h.update(f"|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    path = cache_root() / "remote" / "data" / h.hexdigest()[:32] / NPZ_NAME
    if not path.is_file():
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:  # a file object: numpy adds no suffix
                # the loader wants a train split too; one sample stands in, the device never trains
                np.savez(f, x_train=x[:1], y_train=y[:1], x_val=x, y_val=y)
    return path


def _links(ssh, art: Path, manifest: Path | None) -> tuple[str, dict[str, str]]:
    """(the artifact's path in the run folder, {path in the run folder: remote copy}) for the
    artifact, its side files and the manifest, laid out as here relative to the manifest's
    folder (else the artifact's)."""
    from ..remote.ops import push_group

    base = manifest.resolve().parent if manifest else art.resolve().parent
    pushed = push_group(ssh, art)
    if manifest:
        pushed[manifest] = ssh.push(manifest)
    links = {}
    for local, remote in pushed.items():
        p = Path(local).resolve()
        if not p.is_relative_to(base):
            raise BadInputError(f"{p} lies outside {base}, the folder of {manifest}",
                                hint="keep the compress output folder as it was written")
        links[p.relative_to(base).as_posix()] = remote
    return art.resolve().relative_to(base).as_posix(), links


def remote_verify(art: Path, spec: TargetSpec, x: np.ndarray, y: np.ndarray, *, manifest: Path | None,
                  budget_ms: float | None, min_accuracy: float | None, max_drop: float | None,
                  reference: Any, metric: str, settings=None, max_size_kb: float | None = None,
                  max_peak_mb: float | None = None):
    """Run `edgekd verify` on SPEC's device (see the module docstring); return a VerifyReport.

    A verdict the device reaches (pass, fail, inconclusive) comes back as a report, as a local
    verify's does; any other exit raises the same EdgeKDError class as it would here (2 bad
    input, 4 runtime missing), naming the device. The memory budgets are checked there too, on
    the artifact the device runs (the same bytes as here, sha256-checked): its size, and the
    peak memory of one inference on the device."""
    from ..latency.stats import LatencyStats
    from .report import Check, VerifyReport
    from ..remote.ops import TARGET, Upload, group_files, prepare, remote_fingerprint, run_edgekd, trust_args

    if reference is not None and not isinstance(reference, (str, Path)):
        raise BadInputError(f"target '{spec.name}' runs on a remote device: give the reference as a "
                            f"student.pt file, not a torch module", hint="save it with edgekd's checkpoint format")
    if reference is not None and not Path(reference).is_file():
        raise BadInputError(f"--reference {reference} does not exist", hint="give the student.pt checkpoint")
    npz = val_npz(x, y)
    files = [*group_files(art), *([(manifest, None, None)] if manifest else []), (npz, None, None),
             *([(Path(reference), None, None)] if reference is not None else [])]
    # reachable, this edgekd version, and which files are there already: one round trip, before any copy
    ssh, _ = prepare(spec, files)
    art_rel, links = _links(ssh, art, manifest)
    links[f".edgekd/{NPZ_NAME}"] = ssh.push(npz)
    args: list[Any] = ["verify", art_rel, "--target", TARGET, "--data", f"npz:.edgekd/{NPZ_NAME}",
                       "--metric", metric, "--json", "--samples", ".edgekd/samples.json"]
    if x.ndim == 4 and x.shape[-1] == x.shape[-2]:
        args += ["--resolution", str(int(x.shape[-1]))]  # the arrays as they are: never resized there
    for opt, v in (("--budget-ms", budget_ms), ("--min-accuracy", min_accuracy), ("--max-drop", max_drop),
                   ("--max-size-kb", max_size_kb), ("--max-peak-mb", max_peak_mb)):
        if v is not None:
            args += [opt, repr(float(v))]
    if reference is not None:
        args += ["--reference", Upload(str(reference))]
    args += trust_args(art)
    run = run_edgekd(spec, args, settings=settings or spec.measure, links=links, collect=".edgekd/samples.json",
                     allow_fail=True, what=f"verify of {art.name}", ssh=ssh)
    rc = run.completed.returncode
    try:
        d = json.loads(run.stdout) if rc in (0, 1, 3) else None
    except json.JSONDecodeError:
        d = None
    if not isinstance(d, dict) or "latency" not in d:
        if rc == 0:
            run.json()  # raises, quoting what came back
        raise run.ssh.remote_error(run.completed, f"verify of {art.name}")
    where = remote_fingerprint(run.ssh, run.probe)
    lat = dict(d["latency"])
    lat["environment"] = {**dict(lat.get("environment") or {}), "remote": where}
    samples = json.loads(run.file)["samples_ms"] if run.file else None
    return VerifyReport(
        artifact=str(art), artifact_sha256=str(d.get("artifact_sha256", "")), target=spec.name,
        accuracy=float(d["accuracy"]), n_val=int(d["n_val"]), latency=LatencyStats.from_dict(lat),
        metric=str(d.get("metric", metric)), budget_ms=d.get("budget_ms"),
        reference_accuracy=d.get("reference_accuracy"), parity=d.get("parity"),
        checks=[Check(**c) for c in d.get("checks", [])],
        samples_ms=np.asarray(samples, dtype=np.float64) if samples is not None else None,
        first_inference_ms=d.get("first_inference_ms"), manifest=str(manifest) if manifest else None,
        remote=where)
