"""tokenize: clean splits -> token ids per split (data/tokens/), with the model's fast tokenizer.

Run as `python -m stages.tokenize` (dvc.yaml does): run as a script, this file would stand in for
the standard library's `tokenize` module on the import path.
"""

from reprolab.process_settings import configure_process

configure_process()

from reprolab import paths, storage
from reprolab.encoding import encoder
from reprolab.encoding.truncated import VerifiedEncoder, tokenize_split
from reprolab.errors import run_stage
from reprolab.params import load_params
from reprolab.records import tracking


def main() -> None:
    params = load_params()
    p = params.tokenize
    truncation = encoder.Truncation.of(p)
    tokenizer = encoder.load_tokenizer(params.model.name_or_path)
    verified = VerifiedEncoder(tokenizer, p.max_length, truncation)
    counts = {}
    for split in paths.SPLITS:
        with storage.parquet_sink(paths.token_split(split), encoder.TOKEN_SCHEMA) as sink:
            for table in tokenize_split(paths.clean_split(split), verified, params.ingest.class_names, p.batch_size):
                sink.write(table)
        counts[split] = sink.rows
    identity = encoder.identity(tokenizer, params.model.name_or_path, p.max_length, truncation)
    storage.write_json(identity, paths.TOKENIZER_IDENTITY)
    print(f"tokenize: {counts} rows with {identity['class']} (sha256 {identity['sha256'][:12]})")
    tracking.log_stage(
        "tokenize",
        params,
        outputs=[*map(paths.token_split, paths.SPLITS), paths.TOKENIZER_IDENTITY],
        metrics={"rows": counts},
        inputs={split: paths.clean_split(split) for split in paths.SPLITS},
    )


if __name__ == "__main__":
    run_stage(main)
