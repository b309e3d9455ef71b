//! One module per subcommand.

pub mod convert;
pub mod eval;
pub mod generate;
pub mod init;
pub mod inspect;
pub mod plan;
pub mod score;
pub mod serve;
pub mod train;
pub mod verify;
