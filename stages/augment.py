"""augment: the clean training split -> seeded label-preserving copies, tokenized (data/augmented/train.parquet)."""

from reprolab.process_settings import configure_process

configure_process()

from reprolab import paths, storage
from reprolab.data import augmentation, sentence_augmentation
from reprolab.engines import open_engine
from reprolab.errors import run_stage
from reprolab.params import load_params
from reprolab.records import tracking

# Each task's copies (params.yaml's `task:`): EDA on texts (Wei & Zou 2019), or the tag-preserving
# operations on sentences (Dai & Adel 2020).
BY_TASK = {
    "sequence_classification": augmentation.augment_file,
    "token_classification": sentence_augmentation.augment_file,
}


def main() -> None:
    params = load_params()
    source = paths.clean_split("train")
    # local_workers=1: on this machine the copies are made in the stage's process, as before there were
    # engines (WordNet and the tokenizer loaded once; the tokenizer's threads use every core).
    with open_engine(params.engine, local_workers=1) as engine:
        rows_augmented = BY_TASK[params.task](source, paths.AUGMENTED, params, params.ingest.class_names, engine)
    rows_in = storage.parquet_rows(source)
    print(f"augment: {rows_augmented} augmented rows from {rows_in} training rows")
    tracking.log_stage(
        "augment",
        params,
        outputs=[paths.AUGMENTED],
        metrics={"rows_in": rows_in, "rows_augmented": rows_augmented},
        inputs={"train": source},
    )


if __name__ == "__main__":
    run_stage(main)
