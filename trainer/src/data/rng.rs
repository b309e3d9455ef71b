//! Seeded randomness of the data pipeline. Every draw is a pure function of (seed, stream, index,
//! ...), so the data order resumes from a single `u64` cursor and no generator state is saved.
//!
//! The mixer is SplitMix64's finaliser (Steele, Lea & Flood, "Fast splittable pseudorandom number
//! generators", OOPSLA 2014); the per-epoch order is a keyed Feistel permutation with cycle walking
//! (Black & Rogaway, "Ciphers with arbitrary finite domains", CT-RSA 2002), so `train(index)` costs
//! O(1) and needs no table of the permutation.

/// The 64-bit golden ratio, SplitMix64's increment.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's finaliser: a bijection of `u64` with good avalanche.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash of a tuple of words (order matters).
pub(crate) fn hash(words: &[u64]) -> u64 {
    words.iter().fold(GOLDEN, |h, &w| mix(h ^ mix(w.wrapping_add(GOLDEN))))
}

/// A SplitMix64 stream started from `hash(words)`.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// The stream for a tuple of words, e.g. `(seed, STREAM, index)`.
    pub(crate) fn new(words: &[u64]) -> Self {
        Rng(hash(words))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift with rejection (no modulo bias).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Fisher–Yates shuffle in place.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Position of `i` under a pseudo-random permutation of `0..n` keyed by `key`.
///
/// A 4-round balanced Feistel network on the smallest even bit width covering `n` permutes a domain
/// of fewer than `4n` values; outputs at or past `n` are fed back in (cycle walking) until one lands
/// in `0..n`, which keeps the map a bijection of `0..n`. Expected walks: under 4.
pub(crate) fn permute(i: u64, n: u64, key: u64) -> u64 {
    assert!(i < n, "permute: index {i} outside 0..{n}");
    let bits = (u64::BITS - (n - 1).leading_zeros()).max(2);
    let half = bits.div_ceil(2);
    let mask = (1u64 << half) - 1;
    let mut x = i;
    loop {
        let (mut left, mut right) = (x >> half, x & mask);
        for round in 0..4 {
            let f = hash(&[key, round, right]) & mask;
            (left, right) = (right, left ^ f);
        }
        x = (left << half) | right;
        if x < n {
            return x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_is_a_bijection_of_every_small_domain() {
        for n in 1..=300u64 {
            for key in [0, 1, 0xdead_beef] {
                let mut seen = vec![false; n as usize];
                for i in 0..n {
                    let j = permute(i, n, key);
                    assert!(j < n && !seen[j as usize], "n={n} key={key}: {i} -> {j}");
                    seen[j as usize] = true;
                }
            }
        }
        let identity = (0..1000).filter(|&i| permute(i, 1000, 7) == i).count();
        assert!(identity < 10, "{identity} fixed points of 1000");
    }

    #[test]
    fn below_is_uniform_and_in_range() {
        let mut rng = Rng::new(&[42]);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[rng.below(6) as usize] += 1;
        }
        // Each count is Binomial(60000, 1/6): mean 10000, sd ≈ 91; 500 is over 5 sd.
        assert!(counts.iter().all(|&c| c.abs_diff(10_000) < 500), "{counts:?}");
        assert_eq!(rng.below(1), 0);
    }
}
