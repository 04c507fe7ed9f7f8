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


def tiny_marian(dest: Path, texts: list[str], seed: int = 0) -> Path:
    """A MarianMT of width 16 with seeded random weights and a real MarianTokenizer (a SentencePiece model
    trained on `texts`, shared by source and target, and its vocab.json), saved to `dest` as a
    Hugging Face folder: what `reprolab vendor-model` copies from Helsinki-NLP/opus-mt-*, at 0.5 MB.
    Its translations are random words of that vocabulary; a bias on the end token makes about a third of
    them run to 10 new tokens (cut) and the rest end before."""
    import io
    import json
    import math

    import sentencepiece
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    dest.mkdir(parents=True, exist_ok=True)
    spm = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=spm,
        vocab_size=len(set("".join(texts))) + 32,  # every character seen, and some pieces
        hard_vocab_limit=False,
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        unk_id=1,
        num_threads=1,
        minloglevel=2,
    )
    for name in ("source.spm", "target.spm"):
        (dest / name).write_bytes(spm.getvalue())
    pieces = sentencepiece.SentencePieceProcessor(model_proto=spm.getvalue())
    vocab = {"</s>": 0, "<unk>": 1, "<pad>": 2}  # Marian's order: eos, unk, pad, then the pieces
    for i in range(pieces.get_piece_size()):
        vocab.setdefault(pieces.id_to_piece(i), len(vocab))
    (dest / "vocab.json").write_text(json.dumps(vocab))
    MarianTokenizer(str(dest / "source.spm"), str(dest / "target.spm"), str(dest / "vocab.json")).save_pretrained(dest)
    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=128,
        pad_token_id=2,
        eos_token_id=0,
        decoder_start_token_id=2,
    )
    model = MarianMTModel(config)
    with torch.no_grad():
        # The same chance of ending whatever the vocabulary's size (1.0 measured at 46 tokens).
        model.final_logits_bias[0, config.eos_token_id] = 1.0 + math.log(len(vocab) / 46)
    model.save_pretrained(dest)
    return dest
