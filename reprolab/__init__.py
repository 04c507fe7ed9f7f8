"""reprolab: the library behind a reproducible DVC + MLflow pipeline for fine-tuning transformer text
classifiers. The six DVC stage entry points live in `stages/`; they import this package, never the
other way round.

Importing any module here changes nothing in the process. Entry points (the stages, the `reprolab`
command) call `reprolab.process_settings.configure_process()` first: see that module for why.

- data: `params` (typed params.yaml), `paths` (the files stages hand each other), `storage` (atomic,
  byte-stable Parquet, JSON and CSV), `figures` (byte-stable PNGs), `errors` (the one-line failure)
- stages' work: `ingestion` (sources to raw rows), `cleaning` (parse, normalise, deduplicate, split),
  `encoding` (the model's tokenizer), `truncated_encoding` (tokenizing only what truncation keeps),
  `augmentation` (EDA copies), `modeling` (device, batching, prediction), `training` (the loop on
  accelerate, LoRA, class weights), `checkpoints` (save and resume anywhere), `launching`
  (`accelerate launch` for many processes and machines), `evaluation` (metrics, baseline, plots)
- records: `tracking` (MLflow runs that survive outages), `provenance` (git, packages, CPU kernels),
  `lineage` (`reprolab trace`)
- verbs of the `reprolab` command: `cli`, `audit` (with `audit_history`), `compare` (with
  `significance`), `vendoring`, `tracking_ui`
"""
