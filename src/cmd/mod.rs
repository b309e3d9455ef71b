//! One module per subcommand.

pub mod init;
pub mod inspect;
pub mod score;
pub mod verify;
