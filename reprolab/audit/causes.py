"""Why an audit failed: its failed checks grouped under the first stage whose output moved upstream of
each (find_causes), with what is known to differ between the two runs there: params, code and inputs
from the two dvc.lock files, package versions, CPU kernels, device.
"""

from __future__ import annotations

from typing import Any

from reprolab.audit.check import METRICS_FILE, Check
from reprolab.audit.kernels import kernel_differences
from reprolab.audit.lockfile import downstream_of, output_producers, stage_lock
from reprolab.records import provenance


def find_causes(recorded_lock: dict, reproduced_lock: dict, checks: list[Check], known: dict[str, Any]) -> list[dict]:
    """The failed checks grouped by the first stage whose output moved upstream of each, and what is
    known to differ between the two runs at that stage: its params, code and inputs (from the two
    dvc.lock files), package versions, CPU kernels, device (`known`: the two sides of each)."""
    stages = list(recorded_lock.get("stages", {})) or list(reproduced_lock.get("stages", {}))
    producers = output_producers(recorded_lock, reproduced_lock)
    weight_decided = downstream_of("train", recorded_lock, reproduced_lock)  # where the device shows
    failed = [c for c in checks if not c.ok]
    moved = {c.name.split(":", 1)[0] for c in failed if c.kind == "output"}
    deps = {
        stage: [
            entry["path"]
            for lock in (recorded_lock, reproduced_lock)
            for entry in stage_lock(lock, stage).get("deps") or []
        ]
        for stage in stages
    }
    groups: dict[str, list[Check]] = {}
    for check in failed:
        stage = _stage_of(check, stages, producers, moved, deps, (recorded_lock, reproduced_lock))
        groups.setdefault(stage, []).append(check)
    order = {stage: i for i, stage in enumerate(stages)}
    return [
        {
            "stage": stage,
            "differences": [f"{c.kind} {c.name}" for c in group],
            "known": _known_differences(stage, group, producers, known, weight_decided),
            "metric_change": _metric_change(group),
        }
        for stage, group in sorted(groups.items(), key=lambda item: order.get(item[0], len(order)))
    ]


def _origin(stage: str, producers: dict[str, str], moved: set[str], deps: dict[str, list[str]]) -> str:
    """The first moved stage upstream of a moved stage (itself when nothing upstream moved)."""
    for path in deps.get(stage, []):
        upstream = producers.get(path)
        if upstream and upstream != stage and upstream in moved:
            return _origin(upstream, producers, moved, deps)
    return stage


def _producer_of(path: str, producers: dict[str, str]) -> str | None:
    """The stage whose output holds `path` (an output, or a file inside an output folder)."""
    holders = [out for out in producers if path == out or path.startswith(out.rstrip("/") + "/")]
    return producers[max(holders, key=len)] if holders else None


def _stage_of(
    check: Check,
    stages: list[str],
    producers: dict[str, str],
    moved: set[str],
    deps: dict[str, list[str]],
    locks: tuple[dict, ...],
) -> str:
    """A difference in a stage's own record (code, input, param) is that stage's; a moved output is
    its first moved stage's."""
    if check.kind in ("output", "dependency"):
        stage, path = check.name.split(":", 1)
        if check.kind == "dependency":
            if path not in producers:
                return stage
            stage = producers[path]
    elif check.kind == "param":
        return next(
            (
                s
                for s in stages
                if any(
                    check.name in values for lock in locks for values in stage_lock(lock, s).get("params", {}).values()
                )
            ),
            stages[0],
        )
    else:  # metrics come from the metrics file, MLflow's model and inputs from their stages' outputs
        stage = (
            _producer_of(METRICS_FILE if check.kind in ("metric", "mlflow_metric") else check.name, producers)
            or stages[-1]
        )
    return _origin(stage, producers, moved, deps) if stage in moved else stage


def _metric_change(group: list[Check]) -> float | None:
    """How far the group's metrics moved at most: whether different bits mean a different result."""
    moves = [
        abs(c.reproduced - c.recorded)
        for c in group
        if c.kind in ("metric", "mlflow_metric")
        and isinstance(c.recorded, float | int)
        and isinstance(c.reproduced, float | int)
    ]
    return max(moves) if moves else None


def _known_differences(
    stage: str, group: list[Check], producers: dict[str, str], known: dict[str, Any], weight_decided: set[str]
) -> list[str]:
    found, stale_code = [], []
    for check in group:
        path = check.name.split(":", 1)[-1]
        if check.kind == "dependency" and path not in producers:
            if path.endswith(".py"):
                stale_code.append(path)
            else:
                found.append(f"input {path}: {_short(check.reproduced)} here, {_short(check.recorded)} in dvc.lock")
        elif check.kind == "param":
            found.append(f"param {check.name} {check.reproduced} here, {check.recorded} in dvc.lock")
    if stale_code:  # the revision's code is not what produced its dvc.lock: committed without a re-run
        found.insert(0, f"code changed after dvc.lock was written: {', '.join(stale_code)}")
    packages, tracked = known["packages"], provenance.pipeline_packages()
    found += [
        f"{name} {packages['reproduced'].get(name, 'absent')} here, {packages['recorded'][name]} recorded"
        for name in sorted(packages["recorded"])
        if name in tracked and packages["recorded"][name] != packages["reproduced"].get(name)
    ]
    found += kernel_differences(known["kernels"]["recorded"], known["kernels"]["reproduced"])
    devices = known["devices"]
    if stage in weight_decided and devices["recorded"] != devices["reproduced"]:
        found.append(f"device {devices['reproduced']} here, {devices['recorded']} recorded")
    return found


def _short(value: Any) -> str:
    return str(value)[:12] if value else "absent"
