//! The one error type of the crate.

use std::fmt::Write as _;

/// A failed collective (or group creation, or launch environment), as seen by one rank.
///
/// `lost` lists the ranks whose heartbeat stood still when the failure was examined (see the
/// crate documentation); it is empty when every peer still looked alive or nothing could be said.
/// Display: `rank 1: all_reduce failed: lost rank 2 (no heartbeat for 1.5 s): <c10d message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rank {rank}: {collective} failed{}: {message}", lost_clause(.lost))]
pub struct DistError {
    /// What failed: a collective's name (`all_reduce`, `broadcast`, ...), `init` or `launch`.
    pub collective: String,
    /// The rank that saw the failure.
    pub rank: usize,
    /// Peers found dead when the failure was examined.
    pub lost: Vec<usize>,
    /// The underlying message (c10d's, without its C++ backtrace, or this crate's).
    pub message: String,
}

impl DistError {
    pub(crate) fn new(collective: &str, rank: usize, message: impl Into<String>) -> DistError {
        DistError { collective: collective.to_owned(), rank, lost: Vec::new(), message: message.into() }
    }
}

/// How long a peer's heartbeat counter must stand still before it counts as lost; named in
/// messages.
pub(crate) const LOST_AFTER_MS: u64 = 1500;

fn lost_clause(lost: &[usize]) -> String {
    if lost.is_empty() {
        return String::new();
    }
    let mut text = if lost.len() == 1 { ": lost rank ".to_owned() } else { ": lost ranks ".to_owned() };
    for (i, rank) in lost.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        let _ = write!(text, "{rank}");
    }
    let _ = write!(text, " (no heartbeat for {} s)", LOST_AFTER_MS as f64 / 1000.0);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_lost_ranks() {
        let mut e = DistError::new("all_reduce", 1, "Connection closed by peer");
        assert_eq!(e.to_string(), "rank 1: all_reduce failed: Connection closed by peer");
        e.lost = vec![2];
        assert_eq!(
            e.to_string(),
            "rank 1: all_reduce failed: lost rank 2 (no heartbeat for 1.5 s): Connection closed by peer"
        );
        e.lost = vec![0, 2];
        assert!(e.to_string().contains("lost ranks 0, 2 (no heartbeat"));
    }
}
