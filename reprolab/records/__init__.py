"""What is recorded about every run: MLflow tracking, provenance (git, packages, kernels), lineage and the UI."""
