"""export: the trained model as ONNX fp32 and int8 (models/export), each scored on the test split by the
prediction path evaluate uses, beside torch fp32 -> reports/export.json (sizes, the task's test score, agreement
with torch: figures a rerun reproduces; `make bench` times the backends). With `--model student` (stage
export_student): the distilled student -> models/student_export, reports/student/export.json."""

import sys

from reprolab.process_settings import configure_process

configure_process()

from reprolab import paths, storage
from reprolab.errors import run_stage
from reprolab.inference import backend_comparison, onnx_export
from reprolab.model import runtime
from reprolab.params import load_params
from reprolab.records import tracking
from reprolab.tasks import catalog


def main(files: paths.ScoredModel) -> None:
    stage = files.stage("export")
    params = load_params()
    p = params.export
    onnx_export.check_exportable(files.model_dir)
    onnx_export.export_folder(files.model_dir, files.export_dir, p.opset)
    task = catalog.task_named(params.task)
    test = runtime.TokenData.read(paths.token_split("test"))
    report = backend_comparison.score_backends(files.model_dir, files.export_dir, test, p.batch_size, p.threads)
    storage.write_json(report, files.export_report)
    for backend, row in report["backends"].items():
        agreement = ", ".join(f"{key} {value:.4f}" for key, value in row.items() if "agreement" in key)
        print(f"{stage}: {backend}: {row['size_mb']} MB, {task.score_title} {row[task.score]:.4f}, {agreement}")
    missed = [name for name, met in report["targets"].items() if not met]
    print(f"{stage}: targets {'all met' if not missed else 'missed: ' + ', '.join(missed)}")
    tracking.log_stage(
        stage,
        params,
        outputs=[files.export_report],
        metrics={"export": report["backends"]},
        inputs={"test": paths.token_split("test"), "model": files.weights},
        # The pipeline's headline is the fine-tuned model's test metrics.
        test_metrics_of=(paths.METRICS, paths.WEIGHTS) if files.is_fine_tuned else None,
    )


if __name__ == "__main__":
    chosen = paths.scored_model(sys.argv[1:])
    run_stage(lambda: main(chosen), name=chosen.stage("export"))
