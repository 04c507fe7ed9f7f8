"""The student's frontier: how many (and which) of the teacher's layers it keeps, against its int8 speed
and its test score, to justify `distill.student_layers`.

Run after `dvc repro` in the project (the root, or `--project examples/ner`), with git clean: `python
bench/distill_frontier.py [--layers 0 0,3 0,2,4 0,1,2,3,4] [--rounds 3] [--project DIR]`. Each layer
set other than params.yaml's is trained, scored and exported by the pipeline itself, as an experiment
in the workspace (`dvc exp run -S distill.student_layers=[...]`: distill, evaluate_student and
export_student run; the data stages and the teacher's are up to date), its test score (torch, int8)
read from the student's reports; the workspace is then put back as git and DVC's cache hold it (`git
checkout`, `dvc checkout`). In a temporary workspace (`--temp`) train would run again too, since its
uncached plots are not there. Speed depends on the number of layers, not on their weights: a student
of each size is cut from the teacher (keep_layers), exported to int8 in a temporary folder and timed
beside the teacher's torch fp32 on the same test rows, batch size and threads, in alternating rounds
(backend_comparison.time_backends, the median round).
"""

import json
import subprocess
import tempfile
from pathlib import Path

from common import parse_in_project, project_parser, result_name, save

from reprolab import paths
from reprolab.inference import backend_comparison, onnx_export
from reprolab.inference.prediction import Predictor
from reprolab.model import distillation, runtime, training
from reprolab.params import load_params
from reprolab.tasks import catalog

STUDENT = paths.SCORED_MODELS["student"]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def scores(layers: list[int], default: list[int], score: str) -> dict:
    """The student's test scores with `layers`: the workspace's for the default, else an experiment's."""
    if layers != default:
        name = "frontier-" + "-".join(map(str, layers))
        subprocess.run(["dvc", "exp", "remove", name], capture_output=True)  # an earlier run's, if any
        subprocess.run(["dvc", "exp", "run", "-n", name, "-S", f"distill.student_layers={layers}"], check=True)
    metrics, export = (json.loads(Path(path).read_text()) for path in (STUDENT.metrics, STUDENT.export_report))
    return {
        f"student_torch_{score}": round(metrics["student"][score], 4),
        f"student_int8_{score}": round(export["backends"]["onnx-int8"][score], 4),
        f"teacher_{score}": round(metrics["transformer"][score], 4),
        "verdict_vs_teacher": metrics["student_vs_transformer"]["verdict"],
        "from": "workspace (params.yaml)" if layers == default else "dvc exp run",
    }


def restore_workspace() -> None:
    """The workspace as the commit holds it: git's files, then DVC's cached outputs."""
    git("checkout", "HEAD", "--", ".")
    subprocess.run(["dvc", "checkout", "--force"], check=True, capture_output=True)
    status = subprocess.run(["dvc", "status"], capture_output=True, text=True, check=True).stdout
    if "up to date" not in status:
        raise SystemExit(f"the workspace did not come back to its commit:\n{status}")


def main() -> None:
    parser = project_parser(__doc__)
    parser.add_argument("--layers", nargs="+", default=["0", "0,3", "0,2,4", "0,1,2,3,4"], help="layer sets")
    args = parse_in_project(parser)
    params = load_params()
    p, default = params.export, params.distill.student_layers
    task = catalog.task_named(params.task)
    layer_sets = [[int(layer) for layer in text.split(",")] for text in args.layers]
    if git("status", "--porcelain", "--untracked-files=no"):
        raise SystemExit("commit or stash your changes first: the experiments run in this workspace")
    ordered = sorted(layer_sets, key=lambda layers: layers != default)  # the workspace's own reports first
    try:
        quality = {str(layers): scores(layers, default, task.score) for layers in ordered}
    finally:
        restore_workspace()

    test = runtime.TokenData.read(paths.token_split("test"))
    labels = task.label_names(params.ingest.class_names)
    teacher = runtime.load_model(task, str(paths.MODEL_DIR), labels)
    sizes = sorted({len(layers) for layers in layer_sets})
    with tempfile.TemporaryDirectory() as tmp, backend_comparison.torch_threads(p.threads):
        scorers = {"torch": Predictor(paths.MODEL_DIR, "torch", batch_size=p.batch_size, threads=p.threads)}
        for size in sizes:
            folder = Path(tmp) / f"student-{size}"
            # The teacher's first `size` layers: the same shapes, and so the same speed, as any `size` of them.
            training.save_model(
                distillation.keep_layers(teacher, list(range(size))), str(paths.MODEL_DIR), params, folder
            )
            onnx_export.export_folder(folder, folder / "export", p.opset)
            scorers[f"{size}-layer int8"] = Predictor(
                folder / "export", "onnx-int8", batch_size=p.batch_size, threads=p.threads
            )
        del teacher
        speed = backend_comparison.time_backends(scorers, test.sequences, 1, args.rounds)
    rows = [
        {
            "layers": layers,
            "int8_rows_per_second": speed[f"{len(layers)}-layer int8"]["rows_per_second"],
            "int8_speedup_vs_teacher_torch": speed[f"{len(layers)}-layer int8"]["speedup_vs_torch"],
            **quality[str(layers)],
        }
        for layers in layer_sets
    ]
    save(
        result_name("distill_frontier", args.project),
        {
            "rows": rows,
            "default_layers": default,
            "teacher_torch_rows_per_second": speed["torch"]["rows_per_second"],
            "score": task.score,
            "test_rows": len(test.sequences),
            "batch_size": p.batch_size,
            "threads": p.threads,
            "rounds": args.rounds,
        },
    )


if __name__ == "__main__":
    main()
