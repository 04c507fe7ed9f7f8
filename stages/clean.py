"""clean: data/raw/raw.parquet -> deduplicated, normalised train/val/test splits and the rejects."""

from reprolab.process_settings import configure_process

configure_process()

from reprolab import paths, storage
from reprolab.data import cleaning, sentence_cleaning
from reprolab.engines import open_engine
from reprolab.errors import run_stage
from reprolab.params import load_params
from reprolab.records import tracking

# Each task's clean (params.yaml's `task:`): texts deduplicated near and exact, split by label; or
# sentences normalised word by word, deduplicated, split by document and entity type.
BY_TASK = {"sequence_classification": cleaning.clean_file, "token_classification": sentence_cleaning.clean_sentences}


def main() -> None:
    params = load_params()
    with open_engine(params.engine) as engine:
        summary = BY_TASK[params.task](
            paths.RAW,
            {name: paths.clean_split(name) for name in paths.SPLITS},
            paths.rejects("clean"),
            params.clean,
            engine,
        )
    storage.write_json(summary, paths.DATA_REPORT)
    print(
        f"clean: {summary['rows_in']} rows in, {summary['rows_kept']} kept, {summary['rows_rejected']} "
        f"rejected {summary['rejected_by_reason']}; splits {summary['splits']}"
    )
    tracking.log_stage(
        "clean",
        params,
        outputs=[*map(paths.clean_split, paths.SPLITS), paths.rejects("clean"), paths.DATA_REPORT],
        metrics=summary,
        inputs={"raw": paths.RAW},
    )


if __name__ == "__main__":
    run_stage(main)
