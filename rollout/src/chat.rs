//! The DeepSeek-V3.2 chat encoding (reference §5.3): thinking and non-thinking modes, tools.
