"""augment: the clean training split -> seeded EDA copies, tokenized (data/augmented/train.parquet)."""

from reprolab.process_settings import configure_process

configure_process()

from reprolab import paths, storage
from reprolab.data import augmentation
from reprolab.encoding import encoder
from reprolab.errors import run_stage
from reprolab.params import load_params
from reprolab.records import tracking


def main() -> None:
    params = load_params()
    source = paths.clean_split("train")
    truncation = encoder.Truncation.of(params.tokenize)
    encode = augmentation.lazy_encoder(params.model.name_or_path, params.tokenize.max_length, truncation)
    with storage.parquet_sink(paths.AUGMENTED, augmentation.AUGMENTED_SCHEMA) as sink:
        for table in augmentation.augmented_tables(
            source, params.augment, encode, params.ingest.class_names, truncation
        ):
            sink.write(table)
    rows_in = storage.parquet_rows(source)
    print(f"augment: {sink.rows} augmented rows from {rows_in} training rows")
    tracking.log_stage(
        "augment",
        params,
        outputs=[paths.AUGMENTED],
        metrics={"rows_in": rows_in, "rows_augmented": sink.rows},
        inputs={"train": source},
    )


if __name__ == "__main__":
    run_stage(main)
