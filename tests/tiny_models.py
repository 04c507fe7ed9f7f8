"""Tiny models the tests and benchmarks build: real code paths at a fraction of MiniLM's cost, where the
real model's numbers are not the point."""

from __future__ import annotations

from pathlib import Path


def tiny_encoder(dest: Path, tokenizer_source: Path) -> Path:
    """`tiny_classifier`'s encoder without a head: a pretrained model as a task's training starts from it."""
    from transformers import BertModel

    return tiny_classifier(dest, ["unused", "head"], tokenizer_source, BertModel)


def tiny_classifier(dest: Path, labels: list[str], tokenizer_source: Path, model_class=None) -> Path:
    """A 2-layer BERT of width 32 with seeded random weights and a real model's tokenizer, saved to `dest` as a
    Hugging Face folder (no recipe: a caller writes the one it needs)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from reprolab.encoding import encoder

    torch.manual_seed(0)
    tokenizer = encoder.load_tokenizer(str(tokenizer_source))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        pad_token_id=tokenizer.pad_token_id,
    )
    (model_class or BertForSequenceClassification)(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
