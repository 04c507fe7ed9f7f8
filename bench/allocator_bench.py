"""CPU training steps with and without `runtime.reuse_freed_host_memory` (what the train stage sets).

Each side runs in its own process (the allocator setting is process-wide), alternated --repeats
times so that drift on the machine hits both alike: the pipeline's model, fused AdamW, batch
size `train.batch_size`, random token ids at each --lengths. Reports the median seconds per step
after one warm-up step, the process's system CPU time (page faults) and its peak RSS.
Run: `python bench/allocator_bench.py`.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

from common import median, params, save


def child(lengths: list[int], steps: int, reuse: bool) -> dict:
    import torch

    from reprolab.encoding import encoder
    from reprolab.model import runtime
    from reprolab.model.training import seed_everything
    from reprolab.tasks.sequence_classification import SequenceClassification

    seed_everything(params.train.seed, torch.device("cpu"), params.train.num_threads)
    took_effect = runtime.reuse_freed_host_memory() if reuse else False
    model = runtime.load_model(
        SequenceClassification(), encoder.resolve_model(params.model.name_or_path), params.ingest.labels
    )
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.train.learning_rate, fused=True)
    batch = params.train.batch_size
    seconds = {}
    for length in lengths:
        ids, labels = torch.randint(1000, 20000, (batch, length)), torch.randint(0, 2, (batch,))
        times = []
        for _ in range(steps + 1):
            start = time.perf_counter()
            model(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        seconds[length] = median(times[1:])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "took_effect": took_effect,
        "seconds_per_step": seconds,
        "system_seconds": usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss // 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=["reuse", "default"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.lengths, args.steps, args.child == "reuse")))
        return
    runs: dict[str, list[dict]] = {"default": [], "reuse": []}
    for _ in range(args.repeats):
        for side in runs:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                side,
                "--steps",
                str(args.steps),
                "--lengths",
                *map(str, args.lengths),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[side].append(json.loads(out.strip().splitlines()[-1]))
    summary = {
        side: {
            "took_effect": all(r["took_effect"] for r in rs),
            "seconds_per_step": {
                n: round(median([r["seconds_per_step"][str(n)] for r in rs]), 3) for n in args.lengths
            },
            "system_seconds": round(median([r["system_seconds"] for r in rs]), 1),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
        }
        for side, rs in runs.items()
    }
    speedup = {
        n: round(summary["default"]["seconds_per_step"][n] / summary["reuse"]["seconds_per_step"][n], 2)
        for n in args.lengths
    }
    save(
        "allocator",
        {
            "batch_size": params.train.batch_size,
            "threads": params.train.num_threads,
            "steps": args.steps,
            "repeats": args.repeats,
            **summary,
            "speedup": speedup,
        },
    )


if __name__ == "__main__":
    main()
