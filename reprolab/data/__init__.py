"""The data stages' work: reading sources (ingestion), cleaning, deduplication and splitting,
augmentation, and vendoring registry packages (corpus, model) as pipeline inputs."""
