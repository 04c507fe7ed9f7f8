"""train: fine-tune the pretrained encoder with a classification head on the token splits.

AdamW with linear (or cosine) warmup and decay, gradient accumulation and clipping, dynamic padding
with length-grouped batches, early stopping on validation macro-F1, bf16 autocast on CUDA. On the
CPU the run is deterministic: fixed seeds, thread count and deterministic algorithms.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, log_loss
from tqdm import tqdm

from stages import encoding, io, modeling, paths, tracking
from stages.errors import run_stage
from stages.params import TrainParams, load_params

REPORT_PATH = paths.REPORTS / "train.json"
HISTORY_PATH = paths.PLOTS / "train_history.csv"
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "learning_rate")


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    samples_seen: int = 0
    seconds: float = 0.0


def seed_everything(seed: int, device: torch.device, num_threads: int | None) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if num_threads:
        torch.set_num_threads(num_threads)
    if device.type == "cuda":
        # bf16 and atomics are not bit-stable on GPUs: results match within tolerance only.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True)


def _optimizer(model, p: TrainParams, device: torch.device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, weight in model.named_parameters():
        (no_decay if weight.ndim < 2 or "LayerNorm" in name else decay).append(weight)
    groups = [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=p.learning_rate, fused=device.type == "cuda")


def validate(model, val: modeling.TokenData, p: TrainParams, pad_id: int, device, bf16: bool) -> dict:
    logits = modeling.predict_logits(model, val, p.eval_batch_size, pad_id, device, bf16)
    probs = modeling.softmax(logits)
    predicted = probs.argmax(axis=1)
    return {
        "val_loss": float(log_loss(val.labels, probs, labels=list(range(probs.shape[1])))),
        "val_accuracy": float(accuracy_score(val.labels, predicted)),
        "val_macro_f1": float(f1_score(val.labels, predicted, average="macro")),
    }


def train_model(
    model,
    train: modeling.TokenData,
    val: modeling.TokenData,
    p: TrainParams,
    pad_id: int,
    max_length: int,
    device: torch.device,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train in place; on return the model holds the weights of its best validation epoch."""
    bf16 = modeling.use_bf16(p.mixed_precision, device)
    generator = np.random.default_rng(p.seed)
    batches_per_epoch = math.ceil(len(train) / p.batch_size)
    total_steps = math.ceil(batches_per_epoch / p.gradient_accumulation_steps) * p.epochs
    optimizer = _optimizer(model, p, device)
    from transformers import get_scheduler

    scheduler = get_scheduler(
        p.lr_scheduler, optimizer,
        num_warmup_steps=round(p.warmup_ratio * total_steps), num_training_steps=total_steps,
    )
    pad_to = max_length if p.padding == "max_length" else None
    result = TrainResult()
    best_f1, best_state, stale, step = -1.0, None, 0, 0
    started = time.perf_counter()
    for epoch in range(1, p.epochs + 1):
        model.train()
        batches = modeling.length_grouped_batches(train.lengths, p.batch_size, generator, p.group_by_length)
        epoch_loss, window_loss, window_batches = 0.0, 0.0, 0
        for i, index in enumerate(tqdm(batches, desc=f"epoch {epoch}", unit="batch", mininterval=10)):
            input_ids, mask = modeling.collate([train.sequences[j] for j in index], pad_id, pad_to)
            labels = torch.from_numpy(train.labels[index]).to(device)
            with modeling.autocast(device, bf16):
                loss = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels).loss
            (loss / p.gradient_accumulation_steps).backward()
            epoch_loss += loss.item()
            window_loss += loss.item()
            window_batches += 1
            result.samples_seen += len(index)
            if (i + 1) % p.gradient_accumulation_steps and i + 1 < len(batches):
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), p.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if on_step and step % p.log_every_steps == 0:
                on_step(step, {"train_loss": window_loss / window_batches, "learning_rate": scheduler.get_last_lr()[0]})
                window_loss, window_batches = 0.0, 0
        scores = validate(model, val, p, pad_id, device, bf16)
        result.history.append(
            {"epoch": epoch, "train_loss": epoch_loss / len(batches), **scores,
             "learning_rate": scheduler.get_last_lr()[0]}
        )
        print(f"train: epoch {epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in result.history[-1].items()))
        if scores["val_macro_f1"] > best_f1:
            best_f1, result.best_epoch, stale = scores["val_macro_f1"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= p.early_stopping_patience:
                print(f"train: early stop after epoch {epoch} (best epoch {result.best_epoch})")
                break
    result.seconds = time.perf_counter() - started
    model.load_state_dict(best_state)
    return result


def history_csv(history: list[dict[str, float]]) -> str:
    lines = [",".join(HISTORY_FIELDS)]
    lines += [",".join(f"{row[f]:.6g}" if f != "epoch" else str(row[f]) for f in HISTORY_FIELDS) for row in history]
    return "\n".join(lines) + "\n"


def save_model(model, model_source: str, truncation_side: str) -> None:
    """Weights as safetensors, config and tokenizer: a self-contained Hugging Face directory."""
    tokenizer = encoding.load_tokenizer(model_source, truncation_side)
    with io.atomic_dir(paths.MODEL_DIR) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def main() -> None:
    params = load_params()
    p = params.train
    device = modeling.select_device(p.device)
    seed_everything(p.seed, device, p.num_threads)
    train = modeling.TokenData.read(paths.token_split("train"), paths.AUGMENTED).subset(p.max_train_samples)
    val = modeling.TokenData.read(paths.token_split("val"))
    source = encoding.resolve_model(params.model.name_or_path)
    model = modeling.load_classifier(source, params.ingest.labels).to(device)
    pad_id = model.config.pad_token_id or 0
    inputs = {"train": paths.token_split("train"), "train_augmented": paths.AUGMENTED,
              "val": paths.token_split("val")}
    with tracking.stage_run("train", params, inputs) as run:
        import mlflow

        mlflow.set_tag("train.device", str(device))
        result = train_model(
            model, train, val, p, pad_id, params.tokenize.max_length, device,
            on_step=lambda step, values: mlflow.log_metrics(values, step=step),
        )
        for row in result.history:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        save_model(model, source, params.tokenize.truncation_side)
        best = result.history[result.best_epoch - 1]
        summary = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                   "train_rows": len(train), **{f"best_{k}": v for k, v in best.items() if k.startswith("val_")}}
        io.write_json(summary, REPORT_PATH)
        io.write_text(history_csv(result.history), HISTORY_PATH)
        throughput = result.samples_seen / result.seconds
        mlflow.log_metrics({"train_samples_per_second": throughput, "train_seconds": result.seconds})
        mlflow.log_metrics({k: v for k, v in summary.items() if k.startswith("best_")})
        model_md5 = io.file_md5(paths.MODEL_DIR / "model.safetensors")
        mlflow.set_tag(tracking.MODEL_DIGEST_TAG, model_md5)
        tracking.log_model(mlflow, paths.MODEL_DIR)
        print(f"train: best epoch {result.best_epoch}, val macro-F1 {best['val_macro_f1']:.4f}, "
              f"{throughput:.1f} samples/s on {device}, MLflow run {run.info.run_id}")


if __name__ == "__main__":
    run_stage(main)
