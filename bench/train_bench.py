"""Training throughput on the CPU, each comparison run side by side in this one process.

1. Dynamic padding with length-grouped batches against padding every batch to max_length: samples/s
   and validation macro-F1 after one epoch on the same rows, at --max-length: 512 by default, the
   model's whole context and what the naive recipe pads to (at the pipeline's 64 nearly every mail
   fills the window and padding costs little; at 256, 16% of positions are padding; at 512, 39%).
2. reprolab's training loop against `transformers.Trainer`: same model, rows, batch size,
   learning rate and dynamic padding; samples/s over one epoch, best of --repeats runs of each,
   alternated so that a noisy neighbour on the machine hits both sides alike.
3. What the portable CPU kernels (AVX2, the default: see stages/__init__.py) cost against the
   machine's native ones: the same one-epoch run in a fresh process per side (the kernels are fixed
   when torch loads), alternated, best of --repeats.
Run: `python bench/train_bench.py [--part padding trainer kernels]` (after `dvc repro -s clean`); each
part writes its own result file.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import common  # noqa: F401  first: it calls configure_process() before numpy or torch loads
import numpy as np
from common import clean_texts, params, save

from reprolab import encoding, modeling
from reprolab.training import seed_everything, train_model


def token_data(tokenizer, texts, labels, max_length) -> modeling.TokenData:
    encoded = encoding.encode(tokenizer, texts, max_length)
    return modeling.TokenData([str(i) for i in range(len(texts))], [np.asarray(s, np.int32) for s in encoded],
                              np.asarray(encoding.label_ids(labels, params.ingest.labels)))


def run_ours(train, val, max_length, **overrides):
    import torch

    device = torch.device("cpu")
    p = params.train.model_copy(update={"epochs": 1, "log_every_steps": 10_000, "checkpoint_every_steps": 0,
                                        "early_stopping_patience": 1, **overrides})
    seed_everything(p.seed, device, p.num_threads)
    model = modeling.load_classifier(encoding.resolve_model(params.model.name_or_path), params.ingest.labels)
    result = train_model(model, train, val, p, 0, max_length, device)  # its seconds exclude validation
    return result.samples_seen / result.seconds, result.history[-1]["val_macro_f1"]


def run_trainer(texts, labels, max_length):
    import torch
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    tokenizer = encoding.load_tokenizer(params.model.name_or_path)
    p = params.train
    seed_everything(p.seed, torch.device("cpu"), p.num_threads)
    model = modeling.load_classifier(encoding.resolve_model(params.model.name_or_path), params.ingest.labels)
    data = Dataset.from_dict({"text": texts, "label": encoding.label_ids(labels, params.ingest.labels)}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length), batched=True,
        remove_columns=["text"])
    args = TrainingArguments(output_dir="/tmp/reprolab-trainer-bench", per_device_train_batch_size=p.batch_size,
                             learning_rate=p.learning_rate, num_train_epochs=1,
                             warmup_steps=p.warmup_ratio,  # transformers 5: a float below 1 is a ratio
                             weight_decay=p.weight_decay, lr_scheduler_type=p.lr_scheduler, seed=p.seed,
                             train_sampling_strategy="group_by_length", report_to=[], save_strategy="no",
                             logging_strategy="no", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
    start = time.perf_counter()
    trainer.train()
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--val-rows", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--part", nargs="+", choices=["padding", "trainer", "kernels"],
                        default=["padding", "trainer", "kernels"])
    parser.add_argument("--one-kernel-run", action="store_true", help=argparse.SUPPRESS)  # a child of `kernels`
    args = parser.parse_args()
    modeling.reuse_freed_host_memory()  # as the train stage does on the CPU; every side runs under it
    texts, labels = clean_texts()
    order = np.random.default_rng(0).permutation(len(texts))
    train_idx, val_idx = order[: args.rows], order[args.rows : args.rows + args.val_rows]
    tokenizer = encoding.load_tokenizer(params.model.name_or_path)

    def pick(idx):
        return [texts[i] for i in idx], [labels[i] for i in idx]

    if args.one_kernel_run:
        import torch

        length = params.tokenize.max_length
        speed, f1 = run_ours(token_data(tokenizer, *pick(train_idx), length),
                             token_data(tokenizer, *pick(val_idx), length), length)
        print(json.dumps({"samples_per_second": speed, "val_macro_f1": f1,
                          "torch_capability": torch.backends.cpu.get_cpu_capability()}))
        return
    setup = {"rows": args.rows, "batch_size": params.train.batch_size, "threads": params.train.num_threads}
    if "padding" in args.part:
        save("train_padding", {**setup, **padding(tokenizer, pick(train_idx), pick(val_idx), args.max_length)})
    if "trainer" in args.part:
        save("train_trainer", {**setup, **versus_trainer(tokenizer, pick, train_idx, val_idx, args.repeats)})
    if "kernels" in args.part:
        save("train_kernels", {**setup, **versus_native_kernels(args)})


def padding(tokenizer, train_rows, val_rows, max_length) -> dict:
    train = token_data(tokenizer, *train_rows, max_length)
    val = token_data(tokenizer, *val_rows, max_length)
    dyn_speed, dyn_f1 = run_ours(train, val, max_length, padding="dynamic", group_by_length=True)
    pad_speed, pad_f1 = run_ours(train, val, max_length, padding="max_length", group_by_length=False)
    # The most any padding scheme can save: the share of max_length positions that are padding.
    padding_share = 1 - np.minimum(train.lengths, max_length).sum() / (len(train) * max_length)
    return {"padding": {"max_length": max_length, "padding_share_at_max_length": round(float(padding_share), 3),
                        "samples_per_second": {"dynamic_grouped": round(dyn_speed, 2),
                                               "max_length": round(pad_speed, 2)},
                        "val_macro_f1": {"dynamic_grouped": round(dyn_f1, 4), "max_length": round(pad_f1, 4)},
                        "ratio": round(dyn_speed / pad_speed, 2), "target": 2.0}}


def versus_trainer(tokenizer, pick, train_idx, val_idx, repeats) -> dict:
    length = params.tokenize.max_length
    train, val = token_data(tokenizer, *pick(train_idx), length), token_data(tokenizer, *pick(val_idx[:32]), length)
    ours = theirs = 0.0
    for _ in range(repeats):
        ours = max(ours, run_ours(train, val, length)[0])
        theirs = max(theirs, run_trainer(*pick(train_idx), length))
    return {"trainer": {"max_length": length,
                        "samples_per_second": {"reprolab": round(ours, 2), "transformers_trainer": round(theirs, 2)},
                        "ratio": round(ours / theirs, 2), "target": 1.0}}


def versus_native_kernels(args) -> dict:
    from reprolab.process_settings import PORTABLE_CPU_KERNELS

    inherited = {k: v for k, v in os.environ.items() if k not in PORTABLE_CPU_KERNELS}
    # Samples/s leave validation out: a small validation split keeps the children quick.
    command = [sys.executable, __file__, "--one-kernel-run", "--rows", str(args.rows), "--val-rows", "64"]
    best = {}
    for _ in range(args.repeats):
        for mode in ("portable", "native"):
            done = subprocess.run(command, env={**inherited, "REPROLAB_CPU_KERNELS": mode},
                                  capture_output=True, text=True, check=True)
            run = json.loads(done.stdout.strip().splitlines()[-1])
            if run["samples_per_second"] > best.get(mode, {}).get("samples_per_second", 0):
                best[mode] = run
    portable, native = best["portable"], best["native"]
    return {"kernels": {
        "max_length": params.tokenize.max_length,
        "torch_capability": {"portable": portable["torch_capability"], "native": native["torch_capability"]},
        "samples_per_second": {"portable": round(portable["samples_per_second"], 2),
                               "native": round(native["samples_per_second"], 2)},
        "val_macro_f1": {"portable": round(portable["val_macro_f1"], 4), "native": round(native["val_macro_f1"], 4)},
        "ratio": round(portable["samples_per_second"] / native["samples_per_second"], 2)}}


if __name__ == "__main__":
    main()
