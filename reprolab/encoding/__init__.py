"""From text to token ids: the model's tokenizer (encoder) and tokenizing only what truncation keeps (truncated)."""
