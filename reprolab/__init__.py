"""reprolab: the library behind a reproducible DVC + MLflow pipeline for fine-tuning transformer text
classifiers. The seven DVC stage entry points live in `stages/`, the `reprolab` command in `cli`; both import
this package, never the other way round.

Importing any module here changes nothing in the process. Entry points (the stages, the `reprolab`
command) call `reprolab.process_settings.configure_process()` first: see that module for why.

The tree is the design; each subpackage's docstring says what lives there:
- `data/`: sources to raw rows (ingestion), cleaning, deduplication and splitting, augmentation, vendoring
- `encoding/`: the model's tokenizer (encoder) and tokenizing only what truncation keeps (truncated)
- `model/`: device and batching (runtime), the training loop, checkpoints, launching many processes
- `results/`: evaluation, significance, figures, `reprolab compare`
- `inference/`: the one prediction path, batch prediction over files, the MLflow model, ONNX export
- `records/`: MLflow tracking, provenance, lineage (`reprolab trace`), the UI
- `audit/`: `reprolab audit` and the audit of a branch's history
- the top level, what every room uses: `params` (typed params.yaml), `paths` (the files stages hand each
  other), `storage` (atomic, byte-stable files), `errors` (the one-line failure), `process_settings`, `cli`
"""
