"""CPU numerics held to AVX2 kernels by default (reprolab.process_settings), so trained weights are the
same bits on AVX2 and AVX-512 machines. An AVX2-only machine is stood in for by capping the kernels
explicitly: that is how the committed model, trained on AVX2 machines, was reproduced on AVX-512."""

import json
import os
import platform
import subprocess
import sys

import pytest

from reprolab.process_settings import PORTABLE_CPU_KERNELS, portable_caps
from tests.conftest import REPO
from tests.unit.test_evaluation import _tied_corpus

x86_only = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="SIMD kernel caps are x86-64 settings"
)

# A few AdamW steps through the kinds of op the classifier runs (matmul, GELU, LayerNorm, softmax).
TRAIN_STEPS = """
import hashlib, sys
if sys.argv[1] == "configured":
    from reprolab.process_settings import configure_process
    configure_process()
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
    clean = {k: v for k, v in os.environ.items() if k not in PORTABLE_CPU_KERNELS and k != "REPROLAB_CPU_KERNELS"}
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_STEPS, mode], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    capability, digest = done.stdout.split()
    return capability, digest


@x86_only
def test_default_kernels_give_the_bits_an_avx2_machine_gives():
    native_capability, _ = train_steps("plain")
    if native_capability == "DEFAULT":
        pytest.skip("this CPU has no AVX2: there is nothing wider to hold back")
    assert train_steps("configured") == train_steps("plain", **PORTABLE_CPU_KERNELS)
    assert train_steps("configured")[0] == "AVX2"


@x86_only
def test_native_opt_out_leaves_the_machine_widest_kernels():
    assert train_steps("configured", REPROLAB_CPU_KERNELS="native") == train_steps("plain")


# numpy's own loops and sort, and a dense product (OpenBLAS): each has AVX-512 kernels on x86-64.
NUMPY_OPS = """
import hashlib, sys
if sys.argv[1] == "configured":
    from reprolab.process_settings import configure_process
    configure_process()
import numpy as np
from reprolab.records.provenance import cpu_kernels
x = np.random.default_rng(0).standard_normal(100_003)
square = x[:40_000].reshape(200, 200)
results = (np.exp(x), np.log1p(np.abs(x)), np.power(np.abs(x), 1.7), square @ square,
           np.argsort(np.round(x * 3), kind="quicksort"))
kernels, digest = cpu_kernels(), hashlib.md5(b"".join(r.tobytes() for r in results)).hexdigest()
print(kernels["numpy_simd"], kernels.get("blas_core", "none"), digest)
"""
AVX512_NUMPY = ("X86_V4", "AVX512_ICL", "AVX512_SPR")


def numpy_ops(mode: str, **env: str) -> tuple[str, str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in PORTABLE_CPU_KERNELS and k != "REPROLAB_CPU_KERNELS"}
    done = subprocess.run(
        [sys.executable, "-c", NUMPY_OPS, mode], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    numpy_simd, blas_core, digest = done.stdout.split()
    return numpy_simd, blas_core, digest


@x86_only
def test_numpy_and_openblas_are_held_to_avx2_with_torch():
    """numpy dispatches exp, log, power and its sort to AVX-512 where the CPU has it, and OpenBLAS picks
    an AVX-512 core: both give other bits than on an AVX2 machine unless held."""
    held = numpy_ops("configured")
    assert held == numpy_ops("plain", **portable_caps())
    assert held[0] not in AVX512_NUMPY and held[1] in ("Haswell", "none")
    native = numpy_ops("plain")
    if native[0] in AVX512_NUMPY:
        assert native[2] != held[2]  # on this machine the hold changes results
    assert numpy_ops("configured", REPROLAB_CPU_KERNELS="native") == native


def test_importing_the_library_changes_no_setting():
    """Only the explicit call does: an import of every module leaves the environment as it was."""
    code = (
        "import os, pkgutil, importlib, reprolab\nbefore = dict(os.environ)\n"
        "for module in pkgutil.iter_modules(reprolab.__path__):\n"
        "    importlib.import_module(f'reprolab.{module.name}')\n"
        "print(sorted(set(os.environ.items()) ^ set(before.items())))"
    )
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_CPU_KERNELS and k != "REPROLAB_CPU_KERNELS"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_stage_with_an_unknown_kernel_mode_stops_with_one_line():
    env = {**os.environ, "REPROLAB_CPU_KERNELS": "avx512"}
    done = subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "error: REPROLAB_CPU_KERNELS='avx512': expected 'portable' (the default) or 'native'\n"


_BASELINE_PROBS = """
import json, sys
from reprolab.results.baselines import tfidf_probs
from reprolab.params import BaselineParams
texts, labels = json.load(sys.stdin)
probs = tfidf_probs(texts, labels, texts[:50], BaselineParams(max_features=1000, ngram_max=2, C=10.0), 2)
print(json.dumps(probs.round(9).tolist()))
"""


@x86_only
def test_baseline_is_the_same_whatever_simd_numpy_dispatches_to():
    """What an audit on another CPU relies on: AVX-512, AVX2 and baseline x86-64 code paths agree."""
    texts = _tied_corpus()
    stdin = json.dumps([texts, [int(word.endswith(("1", "3", "7"))) for word in texts]])

    def probs(disabled: str) -> list:
        env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": disabled}
        done = subprocess.run(
            [sys.executable, "-c", _BASELINE_PROBS], input=stdin, env=env, capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout)

    dispatched = probs("")
    assert probs("X86_V4 AVX512_ICL AVX512_SPR X86_V3") == dispatched
