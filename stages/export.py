"""export: the trained model as ONNX fp32 and int8 (models/export), each scored on the test split by the
prediction path evaluate uses, beside torch fp32 -> reports/export.json (sizes, the task's test score, agreement
with torch: figures a rerun reproduces; `make bench` times the backends)."""

from reprolab.process_settings import configure_process

configure_process()

from reprolab import paths, storage
from reprolab.errors import run_stage
from reprolab.inference import backend_comparison, onnx_export
from reprolab.model import runtime
from reprolab.params import load_params
from reprolab.records import tracking
from reprolab.tasks import catalog


def main() -> None:
    params = load_params()
    p = params.export
    onnx_export.check_exportable(paths.MODEL_DIR)
    onnx_export.export_folder(paths.MODEL_DIR, paths.EXPORT_DIR, p.opset)
    task = catalog.task_named(params.task)
    test = runtime.TokenData.read(paths.token_split("test"))
    report = backend_comparison.score_backends(paths.MODEL_DIR, paths.EXPORT_DIR, test, p.batch_size, p.threads)
    storage.write_json(report, paths.EXPORT_REPORT)
    for backend, row in report["backends"].items():
        agreement = ", ".join(f"{key} {value:.4f}" for key, value in row.items() if "agreement" in key)
        print(f"export: {backend}: {row['size_mb']} MB, {task.score_title} {row[task.score]:.4f}, {agreement}")
    missed = [name for name, met in report["targets"].items() if not met]
    print(f"export: targets {'all met' if not missed else 'missed: ' + ', '.join(missed)}")
    tracking.log_stage(
        "export",
        params,
        outputs=[paths.EXPORT_REPORT],
        metrics={"export": report["backends"]},
        inputs={"test": paths.token_split("test"), "model": paths.WEIGHTS},
        test_metrics_of=(paths.METRICS, paths.WEIGHTS),
    )


if __name__ == "__main__":
    run_stage(main)
