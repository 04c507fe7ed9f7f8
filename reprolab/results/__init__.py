"""What the pipeline measures: metrics, the baseline, significance, figures and `reprolab compare`."""
