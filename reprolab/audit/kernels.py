"""CPU kernels and devices in an audit: which kernels a result was trained on, the environment that
runs a revision's stages on them (kernel_environment), what ran differently between the two runs,
why the weights then cannot match bit for bit (inexact_reason), and how a report names a set of
kernels (describe_kernels).
"""

from __future__ import annotations

from typing import Any

from reprolab.process_settings import PORTABLE_CPU_KERNELS, portable_caps


def recorded_kernels(train_report: dict, run: Any) -> dict[str, str] | None:
    """The CPU kernels a result was trained on: its train.json says, else its MLflow run's tags."""
    if "cpu_kernels" in train_report:
        return train_report["cpu_kernels"]
    tags = run.data.tags if run is not None else {}
    return {k.removeprefix("cpu."): v for k, v in tags.items() if k.startswith("cpu.")} or None


# What ran, library by library (provenance.cpu_kernels), and how a reader knows each.
KERNEL_FIELDS = {
    "machine": "machine",
    "cpu_vendor": "CPU vendor (MKL's code path)",
    "torch_capability": "torch SIMD",
    "numpy_simd": "numpy SIMD dispatch",
    "blas_core": "OpenBLAS core",
}


def kernel_environment(recorded: dict | None, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """The environment a revision's stages run in, on the kernels it was made with, and a line saying
    which. A result from before kernels were recorded was made on the AVX2 machines of that time: it
    runs under the portable caps, which give those machines' kernels. A cap the user set explicitly
    stays (it stands for a smaller machine, and the kernels it gives are recorded and compared)."""
    env = dict(env)
    mode = recorded.get("kernels", "portable") if recorded else "portable"
    env["REPROLAB_CPU_KERNELS"] = mode
    if mode == "native":
        for name in PORTABLE_CPU_KERNELS:
            env.pop(name, None)
        return env, "native kernels, as recorded"
    for name, value in portable_caps().items():
        env.setdefault(name, value)
    if not recorded:
        return env, (
            "kernels not recorded (a result from before they were): run under the portable AVX2 caps, "
            "the kernels of the AVX2 machines that made results then"
        )
    unrecorded = [KERNEL_FIELDS[field] for field in ("numpy_simd", "blas_core") if field not in recorded]
    return env, "portable kernels, as recorded" + (
        f" ({' and '.join(unrecorded)} not recorded then: held to AVX2 with the rest)" if unrecorded else ""
    )


def kernel_differences(recorded: dict | None, reproduced: dict | None) -> list[str]:
    """What ran differently, compared by what ran (native on an AVX2 machine is AVX2), field by field."""
    if not recorded or not reproduced:
        return []
    return [
        f"{label} {reproduced[field]} here, {recorded[field]} recorded"
        for field, label in KERNEL_FIELDS.items()
        if field in recorded and field in reproduced and recorded[field] != reproduced[field]
    ]


def inexact_reason(recorded_device: str, reproduced_device: str, recorded: dict | None, reproduced: dict | None) -> str:
    """Why the trained weights cannot match bit for bit ("" when they must)."""
    if "cuda" in recorded_device or "cuda" in reproduced_device:
        return "on CUDA (bf16 and atomics are not bit-stable)"
    if kernel_differences(recorded, reproduced):
        return f"across CPU kernels ({describe_kernels(recorded)} recorded, {describe_kernels(reproduced)} here)"
    return ""


def describe_kernels(kernels: dict | None) -> str:
    if not kernels:
        return "not recorded"
    extra = "".join(
        f", {KERNEL_FIELDS[field]} {kernels[field]}"
        for field in ("cpu_vendor", "numpy_simd", "blas_core")
        if field in kernels
    )
    return f"{kernels.get('machine')} {kernels.get('torch_capability', '?')} ({kernels.get('kernels')}){extra}"
