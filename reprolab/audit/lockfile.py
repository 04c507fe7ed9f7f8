"""Reading a dvc.lock: a stage's entry, which stage produces each output, and the hashes and params
the lock lists, flattened for comparing.

Shared by the run (reproduce: comparing the two locks' hashes and params, removing outputs before the
re-run), the linking of external inputs (remote) and the cause finder (causes).
"""

from __future__ import annotations

from typing import Any


def lock_entries(lock: dict, section: str) -> dict[str, str]:
    return {
        f"{stage}:{entry['path']}": entry.get("md5")
        for stage, body in lock.get("stages", {}).items()
        for entry in body.get(section) or []
    }


def lock_params(lock: dict) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for body in lock.get("stages", {}).values():
        for values in (body.get("params") or {}).values():
            flat.update({key: _number(value) for key, value in values.items()})
    return flat


def _number(value: Any) -> Any:
    """YAML 1.1 reads `5e-05` (no dot) as text; a param is the same number either way."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def stage_lock(lock: dict, stage: str) -> dict:
    return lock.get("stages", {}).get(stage) or {}


def output_producers(*locks: dict) -> dict[str, str]:
    return {
        entry["path"]: stage
        for lock in locks
        for stage, body in lock.get("stages", {}).items()
        for entry in body.get("outs") or []
    }


def downstream_of(stage: str, *locks: dict) -> set[str]:
    """`stage` and every stage of the locks that reads its outputs, directly or through other stages'
    (train: evaluate, export, and the student's stages)."""
    produced = output_producers(*locks)
    found, grew = {stage}, True
    while grew:
        grew = False
        for lock in locks:
            for name, body in lock.get("stages", {}).items():
                if name not in found and any(produced.get(dep["path"]) in found for dep in body.get("deps") or []):
                    found.add(name)
                    grew = True
    return found
