"""Training throughput on a CUDA GPU: this project's loop against `transformers.Trainer`, MFU, compile.

On the default model, with real texts of the default corpus (`dvc repro -s clean` first), tokenized
at each --max-lengths value (the pipeline's own splits are cut at tokenize.max_length):
- samples/s of our loop (bf16 autocast, the stage's settings) and of `Trainer` (same rows, batch size,
  learning rate, length grouping, bf16), one epoch each, best of --repeats, alternated;
- our loop with `torch.compile` (the first epoch includes compiling: run long enough, --rows);
- MFU: 6 x parameters x real (non-padding) tokens per second, against the device's dense bf16 peak
  (known devices by name, or --peak-tflops);
- peak GPU memory of each run (torch.cuda.max_memory_allocated).
Without CUDA it prints one line and exits 0. Results: reports/benchmarks/gpu_train.json.
Run: `python bench/gpu_bench.py [--rows 16384] [--batch-size 64] [--peak-tflops 989]`.
`--rehearse` runs the same code on the CPU (fp32, no memory figures) with a few rows, printing what it
would save: a check of the script before GPU time is spent on it.
"""

import argparse
import sys

import common  # noqa: F401  first: it calls configure_process() before numpy or torch loads
import torch

# Dense bf16 tensor-core peaks (vendor data sheets, without sparsity), by a substring of the device name.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
}


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def one_run(side: str, train, val, rows: tuple[list[str], list[str]], length: int, batch_size: int, cuda: bool):
    """(samples/s, peak GPU memory in GiB, model parameters) of one epoch of `side`."""
    from train_bench import run_ours, run_trainer

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if side == "transformers_trainer":
        speed, parameters = run_trainer(*rows, length, cuda=cuda, batch_size=batch_size), 0
    else:
        speed, _, model, _ = run_ours(
            train,
            val,
            length,
            torch_compile=side == "reprolab_compiled",
            device="cuda" if cuda else "cpu",
            mixed_precision="auto",
            batch_size=batch_size,
        )
        parameters = sum(w.numel() for w in model.parameters())
    return speed, torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0, parameters


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-lengths", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not known by name")
    parser.add_argument("--rehearse", action="store_true", help="run on the CPU with a few rows; save nothing")
    args = parser.parse_args()
    if args.rehearse:
        args.rows, args.max_lengths, args.repeats, args.peak_tflops = 48, [32], 1, args.peak_tflops or 1.0
    elif not torch.cuda.is_available():
        print("gpu_bench: no CUDA device on this machine; nothing measured")
        return
    cuda = not args.rehearse
    import numpy as np
    from common import clean_texts, params, save
    from train_bench import token_data

    from reprolab.encoding import encoder

    device_name = torch.cuda.get_device_name() if cuda else "cpu (rehearsal)"
    peak = peak_tflops(device_name, args.peak_tflops)
    texts, labels = clean_texts()
    order = np.resize(np.random.default_rng(0).permutation(len(texts)), args.rows)  # cycled to --rows
    rows_texts, rows_labels = [texts[i] for i in order], [labels[i] for i in order]
    tokenizer = encoder.load_tokenizer(params.model.name_or_path)
    results = {}
    for length in args.max_lengths:
        train = token_data(tokenizer, rows_texts, rows_labels, length)
        val = train.take(np.arange(min(256, len(train))))
        real_tokens_per_row = float(np.minimum(train.lengths, length).mean())
        best: dict[str, tuple[float, float, int]] = {}
        for _ in range(args.repeats):
            for side in ("reprolab", "transformers_trainer", "reprolab_compiled"):
                run = one_run(side, train, val, (rows_texts, rows_labels), length, args.batch_size, cuda)
                if run[0] > best.get(side, (0.0,))[0]:
                    best[side] = run
        parameters = best["reprolab"][2]
        mfu = {
            side: round(6 * parameters * speed * real_tokens_per_row / (peak * 1e12), 4) if peak else None
            for side, (speed, _, _) in best.items()
        }
        results[str(length)] = {
            "samples_per_second": {side: round(speed, 1) for side, (speed, _, _) in best.items()},
            "peak_memory_gib": {side: round(memory, 2) for side, (_, memory, _) in best.items()},
            "mfu": mfu,
            "real_tokens_per_row": round(real_tokens_per_row, 1),
            "ratio_to_trainer": round(best["reprolab"][0] / best["transformers_trainer"][0], 2),
            "compile_ratio": round(best["reprolab_compiled"][0] / best["reprolab"][0], 2),
        }
    summary = {
        "device": device_name,
        "bf16_peak_tflops": peak,
        "rows": args.rows,
        "batch_size": args.batch_size,
        "targets": {"ratio_to_trainer": 1.5, "mfu_at_256": 0.30},
        "results": results,
    }
    if cuda:
        save("gpu_train", summary)
    else:
        print(summary)


if __name__ == "__main__":
    sys.exit(main())
