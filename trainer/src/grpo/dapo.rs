//! DAPO's two batch-level pieces (Yu et al. 2025): soft overlong punishment (eq. 13), added to the
//! rule-based reward, and the dynamic-sampling filter (eq. 11) that keeps only groups with signal.

/// The length reward of a response of `len` tokens, in `[−penalty_factor, 0]` (DAPO eq. 13 scaled).
///
/// 0 while `len ≤ max_len − buffer`, then linear down to `−penalty_factor` at `len = max_len`, and
/// `−penalty_factor` beyond (truncated responses). `buffer = 0` is a hard step at `max_len`.
pub fn overlong_penalty(len: usize, max_len: usize, buffer: usize, penalty_factor: f64) -> f64 {
    let soft_start = max_len.saturating_sub(buffer);
    if len <= soft_start {
        0.0
    } else if len <= max_len {
        // max_len > soft_start here, so the divisor is positive.
        -penalty_factor * (len - soft_start) as f64 / (max_len - soft_start) as f64
    } else {
        -penalty_factor
    }
}

/// For each consecutive group of `group_size` rewards, whether it has any spread: false for groups
/// whose rewards are all equal (zero advantage, no gradient), which dynamic sampling drops.
pub fn groups_with_signal(rewards: &[f32], group_size: usize) -> Vec<bool> {
    assert!(
        group_size > 0 && rewards.len().is_multiple_of(group_size),
        "groups_with_signal: {} rewards do not split into groups of {group_size}",
        rewards.len()
    );
    rewards.chunks(group_size).map(|g| g.iter().any(|&r| r != g[0])).collect()
}
