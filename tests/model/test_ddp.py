"""Data-parallel training on the loop: 2 CPU processes (gloo) against 1.

Dropout is off, so the two runs differ only by float summation order: their weights must match far
more closely than either moved from the pretrained start. (e2e/test_ddp_stage.py goes the user's way.)
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from reprolab import distributed, modeling
from reprolab.training import seed_everything, train_model
from tests.conftest import MAX_LENGTH, MODEL, corpus_tokens, free_port, train_params

CPU = torch.device("cpu")
# 26 rows in batches of 5 end with a batch of 1, which leaves rank 1 without rows on the last step;
# accumulation over 2 batches exercises DDP's no_sync.
LOOP_PARAMS = dict(batch_size=5, gradient_accumulation_steps=2, num_threads=1, learning_rate=1e-4)


def dropout_free_model():
    torch.manual_seed(0)
    model = modeling.load_classifier(str(MODEL), ["ham", "spam"])
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def train_once(train, val, context: distributed.Context) -> tuple[dict, list]:
    seed_everything(0, CPU, LOOP_PARAMS["num_threads"])
    model = dropout_free_model()
    result = train_model(model, train, val, train_params(**LOOP_PARAMS), 0, MAX_LENGTH, CPU, context=context)
    return model.state_dict(), result.history


def _worker(rank: int, world_size: int, port: int, train, val, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    context = distributed.init("cpu")
    try:
        weights, history = train_once(train, val, context)
        if context.is_main:
            save_file({k: v.contiguous() for k, v in weights.items()}, out)
            with open(out + ".json", "w") as file:
                json.dump(history, file)
    finally:
        distributed.shutdown(context)


def l2_distance(a: dict, b: dict) -> float:
    return sum(((a[k].double() - b[k].double()) ** 2).sum() for k in a).sqrt().item()


def test_two_gloo_processes_match_one_process(tokenizer, tmp_path):
    train, val = corpus_tokens(tokenizer, 13, 0), corpus_tokens(tokenizer, 8, 500)
    initial = dropout_free_model().state_dict()
    single_weights, single_history = train_once(train, val, distributed.SINGLE_PROCESS)

    out = str(tmp_path / "ddp.safetensors")
    mp.spawn(_worker, args=(2, free_port(), train, val, out), nprocs=2, join=True)
    ddp_weights, ddp_history = load_file(out), json.loads(open(out + ".json").read())

    moved, differ = l2_distance(single_weights, initial), l2_distance(single_weights, ddp_weights)
    assert moved > 0.1, "training did not move the weights: the comparison would prove nothing"
    # Measured: differ/moved = 3e-5 (float summation order only); different data or a lost shard
    # gives a distance of the order of `moved` itself.
    assert differ < 1e-3 * moved, f"DDP weights differ by {differ:.2e}; training moved them by {moved:.2e}"
    for one, two in zip(single_history, ddp_history, strict=True):
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
        assert two["val_macro_f1"] == pytest.approx(one["val_macro_f1"], abs=1e-6)
