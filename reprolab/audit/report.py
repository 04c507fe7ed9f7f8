"""An audit's report as Markdown (audit.md): its verdict, causes, what differed, what matched and the
environment; and the one-line description of a cause, which the history audit (`reprolab audit --all`)
puts in its summary too.
"""

from __future__ import annotations

from typing import Any

from reprolab.audit.kernels import describe_kernels


def describe_cause(cause: dict, most: int | None = None) -> str:
    """One line: the stage, how many differences, what is known to differ there (the first `most`)."""
    shown = cause["known"][:most]
    hidden = len(cause["known"]) - len(shown)
    known = "; ".join(shown + ([f"{hidden} more"] if hidden else [])) or (
        "nothing recorded differs (code, inputs, params, packages, kernels, device): a factor the record "
        "does not hold, such as the CPU model beyond its SIMD level or a non-deterministic operation"
    )
    count = len(cause["differences"])
    moved = "" if cause.get("metric_change") is None else f"; metrics moved by at most {cause['metric_change']:.3g}"
    return f"{cause['stage']} ({count} difference{'s' if count != 1 else ''}): {known}{moved}"


def markdown(report: dict[str, Any]) -> str:
    checks = report["checks"]
    failed = [c for c in checks if not c["ok"]]
    lines = [
        f"# Audit of {report['target']}",
        "",
        f"- commit: `{report['commit']}`" + (f" (MLflow run `{report['run_id']}`)" if report["run_id"] else ""),
        f"- verdict: **{report['verdict'].upper()}**: {len(checks) - len(failed)} of {len(checks)} checks match",
        f"- devices: recorded {report['devices']['recorded']}, reproduced {report['devices']['reproduced']}; "
        f"CPU kernels: recorded {describe_kernels(report['cpu_kernels']['recorded'])}, "
        f"reproduced {describe_kernels(report['cpu_kernels']['reproduced'])}; "
        f"the stages ran on {report['cpu_kernels']['audited_on']}",
        f"- metric tolerance {report['metric_tolerance']}"
        + (f": bits cannot match {report['inexact']}" if report["inexact"] else ": every bit must match"),
        f"- pipeline re-run: {report['pipeline_seconds']} s"
        + (
            f" (outputs of {', '.join(report['reused_stages'])} from an earlier audit's run cache)"
            if report["reused_stages"]
            else ""
        )
        + f"; audit wall time {report['wall_seconds']} s",
        "",
    ]
    if report["causes"]:
        lines += [
            "## Causes",
            "",
            "Each difference under the first stage whose output moved upstream of it, with what "
            "is known to differ between the two runs there.",
            "",
        ]
        lines += [
            f"- **{describe_cause(cause)}**: " + ", ".join(f"`{name}`" for name in cause["differences"])
            for cause in report["causes"]
        ]
        lines.append("")
    if failed:
        lines += [
            "## What differed",
            "",
            "| kind | name | recorded | reproduced | detail |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {c['kind']} | `{c['name']}` | {c['recorded']} | {c['reproduced']} | {c['detail']} |" for c in failed
        ]
        lines.append("")
    lines += ["## What matched", "", "| kind | name | value |", "| --- | --- | --- |"]
    lines += [
        f"| {c['kind']} | `{c['name']}` | {c['reproduced']} |"
        for c in checks
        if c["ok"] and c["recorded"] == c["reproduced"]
    ]
    excused = [c for c in checks if c["ok"] and c["recorded"] != c["reproduced"]]
    if excused:
        lines += [
            "",
            "## What differed within what this audit allows",
            "",
            "| kind | name | recorded | reproduced | detail |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {c['kind']} | `{c['name']}` | {c['recorded']} | {c['reproduced']} | {c['detail']} |" for c in excused
        ]
    env = report["environment"]
    lines += ["", "## Environment", "", "| package | recorded | audit |", "| --- | --- | --- |"]
    for name in sorted(env["recorded"].keys() | env["reproduced"].keys()):
        lines.append(f"| {name} | {env['recorded'].get(name, '')} | {env['reproduced'].get(name, '')} |")
    return "\n".join(lines) + "\n"
