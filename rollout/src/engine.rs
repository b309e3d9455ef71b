//! The generation engine: a fixed pool of sequence slots, continuous batching.
