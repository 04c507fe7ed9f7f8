"""ingest: the source named in params.yaml -> data/raw/raw.parquet and the rejects, in source order."""

from reprolab.process_settings import configure_process

configure_process()

from pathlib import Path

from reprolab import paths, storage
from reprolab.data import ingestion, row_rules
from reprolab.errors import run_stage
from reprolab.params import load_params
from reprolab.records import tracking

BY_TASK = row_rules.ROW_RULES  # what a row is, for each task (params.yaml's `task:`)


def main() -> None:
    params = load_params()
    rules = BY_TASK[params.task](params.ingest)
    tally = ingestion.ingest_source(params.ingest, paths.RAW, paths.rejects("ingest"), rules)
    summary = tally.report()
    for source in tally.mismatched:
        print(f"ingest: WARNING {Path(params.ingest.path) / source}: bytes do not match the MD5 in its name")
    storage.write_json(summary, paths.INGEST_REPORT)
    skipped = f"; skipped by the format's rule: {summary['skipped_by_rule']}" if summary["skipped_by_rule"] else ""
    print(
        f"ingest: {summary['rows_in']} rows in, {summary['rows_kept']} kept, {summary['rows_rejected']} rejected "
        f"{summary['rejected_by_reason']}{skipped}"
    )
    tracking.log_stage("ingest", params, outputs=[paths.RAW, paths.rejects("ingest")], metrics=summary)


if __name__ == "__main__":
    run_stage(main)
