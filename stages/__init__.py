"""The seven DVC stage entry points, run by `dvc repro` as `python -m stages.<name>` (see dvc.yaml)."""
