//! `tokenizer.json` through the `tokenizers` crate, with the special tokens the chat format uses.
