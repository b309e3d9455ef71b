//! One module per subcommand.

pub mod generate;
pub mod init;
pub mod inspect;
pub mod score;
pub mod serve;
pub mod verify;
