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
4. This loop against another revision's (--previous-tree, a checkout of it with `data/` linked in):
   each tree's own one-epoch run (`--one-kernel-run`: same rows, params, threads), a fresh process per
   side, alternated, best of --repeats.
5. LoRA against full fine-tuning on the pipeline's own token splits (`dvc repro augment` first): one
   epoch each in a fresh process (peak RSS is the process's), samples/s, trainable parameters and
   test macro-F1. LoRA runs at --lora-learning-rate (adapters want a larger step than full weights).
Run: `python bench/train_bench.py [--part padding trainer kernels previous lora]` (after
`dvc repro -s clean`); each part writes its own result file.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common  # noqa: F401  first: it calls configure_process() before numpy or torch loads
import numpy as np
from common import ROOT, clean_texts, params, save

from reprolab import paths
from reprolab.encoding import encoder
from reprolab.model import runtime
from reprolab.model.training import make_accelerator, seed_everything, train_model
from reprolab.tasks.sequence_classification import SequenceClassification

SEQUENCE_CLASSIFICATION = SequenceClassification()


def token_data(tokenizer, texts, labels, max_length) -> runtime.TokenData:
    encoded = encoder.encode(tokenizer, texts, max_length)
    return runtime.TokenData(
        [str(i) for i in range(len(texts))],
        [np.asarray(s, np.int32) for s in encoded],
        np.asarray(encoder.label_ids(labels, params.ingest.labels)),
    )


def run_ours(train, val, max_length, **overrides):
    import torch

    p = params.train.model_copy(
        update={
            "epochs": 1,
            "log_every_steps": 10_000,
            "checkpoint_every_steps": 0,
            "checkpoint_every_minutes": 0,
            "early_stopping_patience": 1,
            "device": "cpu",
            **overrides,
        }
    )
    seed_everything(p.seed, torch.device(p.device), p.num_threads)
    model = runtime.load_model(
        SEQUENCE_CLASSIFICATION, encoder.resolve_model(params.model.name_or_path), params.ingest.labels
    )
    result = train_model(
        make_accelerator(p), SEQUENCE_CLASSIFICATION, model, train, val, p, 0, max_length
    )  # seconds exclude validation
    return result.samples_seen / result.seconds, result.history[-1]["val_macro_f1"], model, result


def run_trainer(texts, labels, max_length, cuda: bool = False, batch_size: int | None = None):
    import torch
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    tokenizer = encoder.load_tokenizer(params.model.name_or_path)
    p = params.train
    seed_everything(p.seed, torch.device("cuda" if cuda else "cpu"), p.num_threads)
    model = runtime.load_model(
        SEQUENCE_CLASSIFICATION, encoder.resolve_model(params.model.name_or_path), params.ingest.labels
    )
    data = Dataset.from_dict({"text": texts, "label": encoder.label_ids(labels, params.ingest.labels)}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length), batched=True, remove_columns=["text"]
    )
    args = TrainingArguments(
        output_dir="/tmp/reprolab-trainer-bench",
        per_device_train_batch_size=batch_size or p.batch_size,
        bf16=cuda,
        learning_rate=p.learning_rate,
        num_train_epochs=1,
        warmup_steps=p.warmup_ratio,  # transformers 5: a float below 1 is a ratio
        weight_decay=p.weight_decay,
        lr_scheduler_type=p.lr_scheduler,
        seed=p.seed,
        train_sampling_strategy="group_by_length",
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=not cuda,
        dataloader_num_workers=4 if cuda else 0,
        dataloader_pin_memory=cuda,
        disable_tqdm=True,
    )
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
    parser.add_argument(
        "--part",
        nargs="+",
        choices=["padding", "trainer", "kernels", "previous", "lora"],
        default=["padding", "trainer", "kernels"],
    )
    parser.add_argument("--previous-tree", type=Path, help="a checkout of the revision to compare with")
    parser.add_argument("--lora-learning-rate", type=float, default=5e-4)
    parser.add_argument("--one-kernel-run", action="store_true", help=argparse.SUPPRESS)  # a child of `kernels`
    parser.add_argument("--one-method-run", choices=["full", "lora"], help=argparse.SUPPRESS)  # a child of `lora`
    args = parser.parse_args()
    if args.one_method_run:
        print(json.dumps(one_method_run(args.one_method_run, args.lora_learning_rate)))
        return
    if "lora" in args.part:
        save("train_lora", versus_full(args))
    runtime.reuse_freed_host_memory()  # as the train stage does on the CPU; every side runs under it
    texts, labels = clean_texts()
    order = np.random.default_rng(0).permutation(len(texts))
    train_idx, val_idx = order[: args.rows], order[args.rows : args.rows + args.val_rows]
    tokenizer = encoder.load_tokenizer(params.model.name_or_path)

    def pick(idx):
        return [texts[i] for i in idx], [labels[i] for i in idx]

    if args.one_kernel_run:
        import torch

        length = params.tokenize.max_length
        speed, f1, *_ = run_ours(
            token_data(tokenizer, *pick(train_idx), length), token_data(tokenizer, *pick(val_idx), length), length
        )
        print(
            json.dumps(
                {
                    "samples_per_second": speed,
                    "val_macro_f1": f1,
                    "torch_capability": torch.backends.cpu.get_cpu_capability(),
                }
            )
        )
        return
    setup = {"rows": args.rows, "batch_size": params.train.batch_size, "threads": params.train.num_threads}
    if "padding" in args.part:
        save("train_padding", {**setup, **padding(tokenizer, pick(train_idx), pick(val_idx), args.max_length)})
    if "trainer" in args.part:
        save("train_trainer", {**setup, **versus_trainer(tokenizer, pick, train_idx, val_idx, args.repeats)})
    if "kernels" in args.part:
        save("train_kernels", {**setup, **versus_native_kernels(args)})
    if "previous" in args.part:
        save("train_previous_loop", {**setup, **versus_previous_tree(args)})


def padding(tokenizer, train_rows, val_rows, max_length) -> dict:
    train = token_data(tokenizer, *train_rows, max_length)
    val = token_data(tokenizer, *val_rows, max_length)
    dyn_speed, dyn_f1, *_ = run_ours(train, val, max_length, padding="dynamic", group_by_length=True)
    pad_speed, pad_f1, *_ = run_ours(train, val, max_length, padding="max_length", group_by_length=False)
    # The most any padding scheme can save: the share of max_length positions that are padding.
    padding_share = 1 - np.minimum(train.lengths, max_length).sum() / (len(train) * max_length)
    return {
        "padding": {
            "max_length": max_length,
            "padding_share_at_max_length": round(float(padding_share), 3),
            "samples_per_second": {"dynamic_grouped": round(dyn_speed, 2), "max_length": round(pad_speed, 2)},
            "val_macro_f1": {"dynamic_grouped": round(dyn_f1, 4), "max_length": round(pad_f1, 4)},
            "ratio": round(dyn_speed / pad_speed, 2),
            "target": 2.0,
        }
    }


def versus_trainer(tokenizer, pick, train_idx, val_idx, repeats) -> dict:
    length = params.tokenize.max_length
    train, val = token_data(tokenizer, *pick(train_idx), length), token_data(tokenizer, *pick(val_idx[:32]), length)
    ours = theirs = 0.0
    for _ in range(repeats):
        ours = max(ours, run_ours(train, val, length)[0])
        theirs = max(theirs, run_trainer(*pick(train_idx), length))
    return {
        "trainer": {
            "max_length": length,
            "samples_per_second": {"reprolab": round(ours, 2), "transformers_trainer": round(theirs, 2)},
            "ratio": round(ours / theirs, 2),
            "target": 1.0,
        }
    }


def one_kernel_run(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> dict:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def versus_previous_tree(args) -> dict:
    """Samples/s of this tree's loop and the previous tree's, each its own `--one-kernel-run`."""
    if args.previous_tree is None:
        raise SystemExit(
            "--part previous needs --previous-tree (e.g. `git worktree add /tmp/prev REV`, "
            "then link data/ and models/pretrained into it)"
        )
    trees = {"this": ROOT, "previous": args.previous_tree.resolve()}
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for side, tree in trees.items():
            command = [
                sys.executable,
                str(tree / "bench/train_bench.py"),
                "--one-kernel-run",
                "--rows",
                str(args.rows),
                "--val-rows",
                "64",
            ]
            run = one_kernel_run(command, {**os.environ, "PYTHONPATH": str(tree)}, cwd=tree)
            if run["samples_per_second"] > best.get(side, {}).get("samples_per_second", 0):
                best[side] = run
    return {
        "previous_loop": {
            "max_length": params.tokenize.max_length,
            "previous_tree": str(trees["previous"]),
            "samples_per_second": {side: round(run["samples_per_second"], 2) for side, run in best.items()},
            "val_macro_f1": {side: round(run["val_macro_f1"], 4) for side, run in best.items()},
            "ratio": round(best["this"]["samples_per_second"] / best["previous"]["samples_per_second"], 2),
        }
    }


def one_method_run(method: str, lora_learning_rate: float) -> dict:
    """One epoch of `method` on the pipeline's token splits, scored on the test split (a child process)."""
    import resource

    import torch
    from sklearn.metrics import f1_score

    train = runtime.TokenData.read(paths.token_split("train"), paths.AUGMENTED)
    val, test = runtime.TokenData.read(paths.token_split("val")), runtime.TokenData.read(paths.token_split("test"))
    overrides = {"method": method} | ({"learning_rate": lora_learning_rate} if method == "lora" else {})
    speed, _, model, result = run_ours(train, val, params.tokenize.max_length, **overrides)
    logits = runtime.predict_logits(model, test.sequences, params.evaluate.batch_size, 0, torch.device("cpu"))
    return {
        "samples_per_second": round(speed, 2),
        "trainable_parameters": result.trainable_parameters,
        "parameters": sum(w.numel() for w in model.parameters()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "test_macro_f1": round(float(f1_score(test.labels, logits.argmax(1), average="macro")), 4),
        "learning_rate": overrides.get("learning_rate", params.train.learning_rate),
    }


def versus_full(args) -> dict:
    runs = {
        method: one_kernel_run(
            [
                sys.executable,
                __file__,
                "--one-method-run",
                method,
                "--lora-learning-rate",
                str(args.lora_learning_rate),
            ],
            dict(os.environ),
        )
        for method in ("full", "lora")
    }
    return {
        "lora": {
            "max_length": params.tokenize.max_length,
            "epochs": 1,
            "lora": params.train.lora.model_dump(),
            "runs": runs,
            "samples_per_second_ratio": round(
                runs["lora"]["samples_per_second"] / runs["full"]["samples_per_second"], 2
            ),
        }
    }


def versus_native_kernels(args) -> dict:
    from reprolab.process_settings import PORTABLE_CPU_KERNELS

    inherited = {k: v for k, v in os.environ.items() if k not in PORTABLE_CPU_KERNELS}
    # Samples/s leave validation out: a small validation split keeps the children quick.
    command = [sys.executable, __file__, "--one-kernel-run", "--rows", str(args.rows), "--val-rows", "64"]
    best = {}
    for _ in range(args.repeats):
        for mode in ("portable", "native"):
            run = one_kernel_run(command, {**inherited, "REPROLAB_CPU_KERNELS": mode})
            if run["samples_per_second"] > best.get(mode, {}).get("samples_per_second", 0):
                best[mode] = run
    portable, native = best["portable"], best["native"]
    return {
        "kernels": {
            "max_length": params.tokenize.max_length,
            "torch_capability": {"portable": portable["torch_capability"], "native": native["torch_capability"]},
            "samples_per_second": {
                "portable": round(portable["samples_per_second"], 2),
                "native": round(native["samples_per_second"], 2),
            },
            "val_macro_f1": {
                "portable": round(portable["val_macro_f1"], 4),
                "native": round(native["val_macro_f1"], 4),
            },
            "ratio": round(portable["samples_per_second"] / native["samples_per_second"], 2),
        }
    }


if __name__ == "__main__":
    main()
