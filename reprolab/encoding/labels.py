"""The label id no loss counts: a position of token data that carries no label (a special token,
context a window repeats, a word's later sub-tokens). torch's cross-entropy ignores it by default
(`ignore_index=-100`), as Hugging Face's token-classification models and scripts do.

Its own module, so that the model runtime reads token data without importing how words are aligned.
"""

IGNORED = -100
