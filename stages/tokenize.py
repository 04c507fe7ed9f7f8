"""tokenize: clean splits -> token ids per split (data/tokens/), with the model's fast tokenizer.

Run as `python -m stages.tokenize` (dvc.yaml does): run as a script, this file would stand in for
the standard library's `tokenize` module on the import path.
"""

from reprolab.process_settings import configure_process

configure_process()

from reprolab import paths, storage
from reprolab.encoding import encoder, truncated, word_alignment
from reprolab.engines import open_engine
from reprolab.errors import run_stage
from reprolab.params import load_params
from reprolab.records import tracking

# Each task's tokenization (params.yaml's `task:`) and what its ids depend on besides the tokenizer:
# texts cut to max_length by `tokenize.truncation`, or sentences' words windowed with their tags aligned.
BY_TASK = {
    "sequence_classification": (truncated.tokenize_splits, truncated.identity_settings),
    "token_classification": (word_alignment.tokenize_splits, word_alignment.identity_settings),
}


def main() -> None:
    params = load_params()
    p = params.tokenize
    tokenize_splits, identity_settings = BY_TASK[params.task]
    tokenizer = encoder.load_tokenizer(params.model.name_or_path)
    # local_workers=1: on this machine the tokenizer's own threads already use every core.
    with open_engine(params.engine, local_workers=1) as engine:
        counts = tokenize_splits(
            tokenizer,
            p,
            params.ingest.class_names,
            {split: paths.clean_split(split) for split in paths.SPLITS},
            {split: paths.token_split(split) for split in paths.SPLITS},
            engine,
        )
    identity = encoder.identity(tokenizer, params.model.name_or_path, p.max_length, identity_settings(p))
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
