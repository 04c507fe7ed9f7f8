"""CPU numerics held to AVX2 kernels by default (stages/__init__.py), so trained weights are the same
bits on AVX2 and AVX-512 machines. An AVX2-only machine is stood in for by capping the kernels
explicitly: that is how the committed model, trained on AVX2 machines, was reproduced on AVX-512."""

import os
import platform
import subprocess
import sys

import pytest

import stages

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="SIMD kernel caps are x86-64 settings")

# A few AdamW steps through the kinds of op the classifier runs (matmul, GELU, LayerNorm, softmax).
TRAIN_STEPS = """
import hashlib, sys
if sys.argv[1] == "with-stages":
    import stages
import torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(384, 1536), torch.nn.GELU(), torch.nn.LayerNorm(1536),
                          torch.nn.Linear(1536, 2))
x, y = torch.randn(32, 384), torch.randint(0, 2, (32,))
opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
for _ in range(3):
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    opt.zero_grad()
weights = b"".join(p.detach().numpy().tobytes() for p in net.parameters())
print(torch.backends.cpu.get_cpu_capability(), hashlib.md5(weights).hexdigest())
"""


def train_steps(mode: str, **env: str) -> tuple[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in stages.PORTABLE_CPU_KERNELS
             and k != "REPROLAB_CPU_KERNELS"}
    done = subprocess.run([sys.executable, "-c", TRAIN_STEPS, mode], env={**clean, **env},
                          capture_output=True, text=True, check=True)
    capability, digest = done.stdout.split()
    return capability, digest


def test_default_kernels_give_the_bits_an_avx2_machine_gives():
    native_capability, _ = train_steps("plain")
    if native_capability == "DEFAULT":
        pytest.skip("this CPU has no AVX2: there is nothing wider to hold back")
    assert train_steps("with-stages") == train_steps("plain", **stages.PORTABLE_CPU_KERNELS)
    assert train_steps("with-stages")[0] == "AVX2"


def test_native_opt_out_leaves_the_machine_widest_kernels():
    assert train_steps("with-stages", REPROLAB_CPU_KERNELS="native") == train_steps("plain")


def test_unknown_kernel_mode_fails_at_import():
    env = {**os.environ, "REPROLAB_CPU_KERNELS": "avx512"}
    done = subprocess.run([sys.executable, "-c", "import stages"], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "REPROLAB_CPU_KERNELS='avx512'" in done.stderr
