"""reprolab: the library behind a reproducible DVC + MLflow pipeline for fine-tuning transformers on
labelled text. The seven DVC stage entry points live in `stages/`, the `reprolab` command in `cli`; both import
this package, never the other way round.

Importing any module here changes nothing in the process. Entry points (the stages, the `reprolab`
command) call `reprolab.process_settings.configure_process()` first: see that module for why.

The tree is the design; each subpackage's docstring says what lives there:
- `data/`: sources to raw rows (ingestion), cleaning, deduplication and splitting, augmentation, vendoring
- `encoding/`: the model's tokenizer (encoder) and tokenizing only what truncation keeps (truncated)
- `tasks/`: what differs between tasks (the head, loss, metrics, prediction output) behind one
  interface (`tasks.base.Task`); params.yaml's `task:` picks one from `tasks.catalog`
- `model/`: device and batching (runtime), training set-up, the loop, checkpoints, launching many processes
- `results/`: metrics (the one macro-F1), each task's baseline, evaluation, significance, figures, the report model,
  `reprolab compare`
- `inference/`: the one prediction path, batch prediction over files, the MLflow model, ONNX export and the
  backends' comparison
- `records/`: MLflow tracking, provenance, lineage (`reprolab trace`), the UI
- `audit/`: `reprolab audit` and the audit of a branch's history
- the top level, what every room uses: `params` (typed params.yaml), `paths` (the files stages hand each
  other), `storage` (atomic, byte-stable files), `errors` (the one-line failure), `process_settings`, `cli`;
  and `serving`, the MLflow model class's old import path: models logged before the subpackages load
  their class from there
"""
