//! A sample's text while it streams: each token's piece is decoded as it arrives, and the text is
//! sent only as far as no later token can change it.
//!
//! Two things a later token can change: bytes of a character a token split (the decoder shows
//! them as U+FFFD until the rest arrives; `IncrementalDecoder` already holds such a piece back),
//! and text that may turn out to be a stop string (the reply ends before it, so it must never be
//! sent) or a marker the endpoint splits the reply at (e.g. chat's `</think>`). [`releasable`]
//! decides how far is safe; [`final_len`] is the cut the non-streamed answer makes too, so the
//! streamed pieces add up to the same text.

use crate::engine::FinishReason;
use crate::tokenizer::{IncrementalDecoder, Tokenizer};
use std::ops::Range;

/// How many leading bytes of `text` may be sent now. `text` is what a sample decoded to so far
/// (later tokens only extend it). Held back: everything from the first whole stop string on (the
/// reply ends before it), any tail that is the start of a stop string or of a marker (a marker
/// that ends `text` included: what follows decides what it is), and a trailing run of U+FFFD
/// (bytes that may become one character with the next token's). Always a char boundary.
pub fn releasable(text: &str, stops: &[String], markers: &[&str]) -> usize {
    let mut end = first_stop(text, stops).unwrap_or(text.len());
    for pattern in stops.iter().map(String::as_str).chain(markers.iter().copied()) {
        end = end.min(text.len() - open_tail(text, pattern));
    }
    end.min(text.trim_end_matches('\u{FFFD}').len())
}

/// Where the first of the (non-empty) `stops` begins in `text`.
pub fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min()
}

/// The length of a finished sample's text, `full` being all it decoded to: cut before the first
/// stop string when it ended by a stop (as OpenAI does; the ids keep the token that completed it),
/// else all of it.
pub fn final_len(full: &str, finish: FinishReason, stops: &[String]) -> usize {
    match (finish, first_stop(full, stops)) {
        (FinishReason::Stop, Some(at)) => at,
        _ => full.len(),
    }
}

/// The length of the longest tail of `text` that is a prefix of `pattern` (all of it included).
/// Such a tail starts where a char of `pattern` starts, so it starts on a char boundary of `text`.
fn open_tail(text: &str, pattern: &str) -> usize {
    let (t, p) = (text.as_bytes(), pattern.as_bytes());
    (1..=p.len().min(t.len())).rev().find(|&k| t.ends_with(&p[..k])).unwrap_or(0)
}

/// One sample's text while it streams: what it decoded to so far, and how much of that was sent.
pub struct TextStream {
    decoder: IncrementalDecoder,
    text: String,
    sent: usize,
}

impl TextStream {
    /// An empty stream; `skip_special` as in `render::render` (completions skip special tokens,
    /// chat keeps them).
    pub fn new(skip_special: bool) -> Self {
        TextStream { decoder: IncrementalDecoder::new(skip_special), text: String::new(), sent: 0 }
    }

    /// Adds token `id`; returns its piece (empty while a character is unfinished).
    pub fn push(&mut self, tok: &Tokenizer, id: i64) -> String {
        let piece = self.decoder.push(tok, id).unwrap_or_default();
        self.text.push_str(&piece);
        piece
    }

    /// The text decoded so far (all of it once [`TextStream::finish`]ed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Sends what [`releasable`] allows: the byte range of [`TextStream::text`] newly sent.
    pub fn release(&mut self, stops: &[String], markers: &[&str]) -> Range<usize> {
        // Nothing before `sent` holds a stop string or an open marker, so only the rest is searched.
        let start = self.sent;
        self.sent += releasable(&self.text[start..], stops, markers);
        start..self.sent
    }

    /// Ends the sample (it finished for `finish`): the text becomes the final one, as the
    /// non-streamed answer's, and the range of it not sent yet is returned.
    pub fn finish(&mut self, tok: &Tokenizer, finish: FinishReason, stops: &[String]) -> Range<usize> {
        let rest = self.decoder.finish(tok).unwrap_or_default();
        self.text.push_str(&rest);
        self.text.truncate(final_len(&self.text, finish, stops));
        // `sent` never passes a stop string's start, so it is within the final text.
        let start = self.sent.min(self.text.len());
        self.sent = self.text.len();
        start..self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stop_strings_and_their_starts_are_held_back() {
        let s = stops(&["STOP", "\n\n"]);
        assert_eq!(releasable("hello world", &s, &[]), 11, "nothing to hold");
        assert_eq!(releasable("hello ST", &s, &[]), 6, "the start of a stop string waits");
        assert_eq!(releasable("hello S", &s, &[]), 6);
        assert_eq!(releasable("hello\n", &s, &[]), 5);
        assert_eq!(releasable("hello STOP and more", &s, &[]), 6, "nothing after a stop string");
        assert_eq!(releasable("aSTOPb\n\nc", &s, &[]), 1, "the first stop string counts");
        assert_eq!(releasable("STO", &s, &[]), 0);
        assert_eq!(releasable("hello", &stops(&[""]), &[]), 5, "an empty stop string is none");
        assert_eq!(releasable("", &s, &[]), 0);
    }

    #[test]
    fn markers_are_held_only_at_the_end() {
        let markers = ["</think>"];
        assert_eq!(releasable("reason</th", &[], &markers), 6);
        assert_eq!(releasable("reason</think>", &[], &markers), 6, "a marker at the end waits");
        assert_eq!(releasable("reason</think>answer", &[], &markers), 20, "a marker inside passes");
        assert_eq!(releasable("ab<", &[], &markers), 2, "the shortest start is held too");
        assert_eq!(releasable("a<b", &[], &markers), 3, "a start that went on otherwise passes");
    }

    #[test]
    fn unfinished_characters_are_held_back() {
        assert_eq!(releasable("caf\u{FFFD}", &[], &[]), 3);
        assert_eq!(releasable("caf\u{FFFD}\u{FFFD}", &[], &[]), 3);
        assert_eq!(releasable("a\u{FFFD}b", &[], &[]), 5, "a bad byte inside stays as it decoded");
        // Multi-byte stop strings and markers: tails are matched on chars, never inside one.
        let s = stops(&["｜end｜"]);
        assert_eq!(releasable("ok ｜en", &s, &[]), 3);
        assert_eq!(releasable("ok ｜", &s, &[]), 3);
        assert_eq!(releasable("ok ｜x", &s, &[]), "ok ｜x".len());
        assert_eq!(releasable("ok é", &[], &["éa"]), 3);
    }

    #[test]
    fn the_final_text_is_cut_only_for_a_stop() {
        let s = stops(&["STOP"]);
        assert_eq!(final_len("abSTOPcd", FinishReason::Stop, &s), 2);
        assert_eq!(final_len("abSTOPcd", FinishReason::Length, &s), 8);
        assert_eq!(final_len("abcd", FinishReason::Stop, &s), 4);
    }

    /// The test tokenizer (byte-level BPE) spells a CJK character as several byte tokens.
    #[test]
    fn a_character_split_across_tokens_is_sent_whole_and_pieces_add_up() {
        let tok = Tokenizer::from_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).unwrap();
        let text = "a 你好 STOP b";
        let ids = tok.encode(text, false).unwrap();
        let s = stops(&["STOP"]);
        let mut stream = TextStream::new(true);
        let mut sent = String::new();
        let mut split = false;
        for &id in &ids {
            let piece = stream.push(&tok, id);
            split |= piece.is_empty();
            let range = stream.release(&s, &[]);
            let part = &stream.text()[range];
            assert!(!part.contains('\u{FFFD}') && !part.contains('S'), "{part:?} sent early");
            sent.push_str(part);
        }
        assert!(split, "some token of {ids:?} ends inside a character");
        let range = stream.finish(&tok, FinishReason::Stop, &s);
        sent.push_str(&stream.text()[range]);
        assert_eq!(sent, "a 你好 ");
        assert_eq!(stream.text(), "a 你好 ");
    }
}
