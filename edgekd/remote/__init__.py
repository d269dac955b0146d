"""Remote targets: measure, profile and check a target on another device over SSH.

A target with a ``remote:`` section runs on that device: the model is copied there (verified,
content-addressed, never used half-written), `edgekd` runs there on the same target minus
``remote:``, and its JSON comes back with the device's fingerprint. `verify` on such a target
sends the validation arrays and the reference there too (edgekd/verify/remote.py). Names load
lazily.
"""
from __future__ import annotations

from .._lazy import lazy_api

_API: dict[str, str] = {
    "SSHTarget": "ssh:SSHTarget",
    "Remote": "ssh:Remote",
    "Upload": "ops:Upload",
    "TARGET": "ops:TARGET",
    "Probe": "ops:Probe",
    "probe": "ops:probe",
    "check_device": "ops:check_device",
    "is_remote": "ops:is_remote",
    "run_edgekd": "ops:run_edgekd",
    "remote_bench": "ops:remote_bench",
    "remote_runtime": "ops:remote_runtime",
    "remote_target_yaml": "ops:remote_target_yaml",
    "side_files": "ops:side_files",
    "push_group": "ops:push_group",
    "profile_remote": "profile:profile_remote",
    "profile_targets": "profile:profile_targets",
    "doctor": "doctor:doctor",
}


__getattr__, __dir__ = lazy_api(__name__, _API, globals())


__all__ = sorted(_API)
