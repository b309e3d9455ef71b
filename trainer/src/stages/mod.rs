//! The stages a recipe runs: the supervised ones ([`lm`]), GRPO ([`grpo`]) and eval ([`eval`]).

pub mod eval;
pub mod grpo;
pub mod lm;
