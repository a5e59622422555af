"""A byte-level tokenizer built in code: no download, 259 tokens, lossless on any UTF-8 text."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """Return a pure byte-level tokenizer (3 special tokens + 256 bytes, no merges).

    Padding is on the left, as batched generation needs. Save it with ``save_pretrained`` and
    load it back with ``AutoTokenizer.from_pretrained`` like any Hugging Face tokenizer.

    Example::

        >>> tok = byte_level_tokenizer()
        >>> len(tok), tok.pad_token_id, tok.eos_token_id
        (259, 0, 2)
        >>> tok.decode(tok("add 12+34=")["input_ids"])
        'add 12+34='
    """
    vocab = {tok: i for i, tok in enumerate((PAD, BOS, EOS))}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS
    )
    hf.padding_side = "left"
    return hf
