#!/usr/bin/env python3
"""Writes the tiny byte-level BPE fixture `tokenizer.json` (+ `tokenizer_config.json`) used by
rollout/tests/tokenizer.rs. Standard library only; run from this folder: `python3 make_tokenizer.py`.

Layout: the DeepSeek chat markers as added tokens (ids 0..10, bos = 0 and eos = 1 as in DeepSeek's
files; the real ids of the other markers are large and differ), then the 256 byte symbols of the
GPT-2 byte-to-unicode table, then a handful of merges so common words become one token.
"""
import json

SPECIAL = [
    ("<｜begin▁of▁sentence｜>", True),
    ("<｜end▁of▁sentence｜>", True),
    ("<｜User｜>", True),
    ("<｜Assistant｜>", True),
    # Whether DeepSeek marks <think>/</think> special is unconfirmed; here they are not, so
    # decoding with skip_special still shows them.
    ("<think>", False),
    ("</think>", False),
    ("<｜tool▁calls▁begin｜>", True),
    ("<｜tool▁calls▁end｜>", True),
    ("<｜tool▁call▁begin｜>", True),
    ("<｜tool▁call▁end｜>", True),
    ("<｜tool▁sep｜>", True),
]

MERGES = [
    "H e", "l l", "He ll", "Hell o",
    "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d",
    "Ġ t", "h e", "Ġt he",
    "Ġ a", "n s", "Ġa ns", "w e", "Ġans we", "Ġanswe r",
    "Ġ i", "Ġi s",
]


def byte_symbols():
    """The GPT-2 byte-level table: printable bytes map to themselves, the rest to 256 + n."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def main():
    vocab = {}
    for content, _ in SPECIAL:
        vocab[content] = len(vocab)
    for sym in byte_symbols():
        vocab[sym] = len(vocab)
    for merge in MERGES:
        left, right = merge.split(" ")
        assert left in vocab and right in vocab, merge
        vocab.setdefault(left + right, len(vocab))
    added = [
        {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": s}
        for i, (c, s) in enumerate(SPECIAL)
    ]
    level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": level,
        "post_processor": level,
        "decoder": level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": False, "vocab": vocab, "merges": MERGES,
        },
    }
    with open("tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=1)
        f.write("\n")
    token = lambda c: {"__type": "AddedToken", "content": c, "lstrip": False, "normalized": True,
                       "rstrip": False, "single_word": False}
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": token(SPECIAL[0][0]),
        "eos_token": token(SPECIAL[1][0]),
        "pad_token": token(SPECIAL[1][0]),
        "model_max_length": 131072,
        "tokenizer_class": "LlamaTokenizerFast",
    }
    with open("tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
