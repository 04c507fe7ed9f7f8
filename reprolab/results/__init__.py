"""What the pipeline measures: metrics (the one macro-F1), each task's baseline, evaluate's
scores and plot data, significance, figures, the report model (Markdown and HTML) and `reprolab compare`."""
