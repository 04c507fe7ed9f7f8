"""The data stages' work: reading sources (walkers through folders and archives, readers per format,
validation of each record, and the ingest run itself, ingestion, with what they share in ingest_shared),
cleaning, deduplication and splitting, augmentation, and vendoring registry packages (corpus, model) as
pipeline inputs."""
