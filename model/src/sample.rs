//! The sampling pieces of the rollout engine (`rlvr_rollout::engine`): truncation, seeded
//! per-sequence streams, the draw, and copying a prefilled prompt's cache rows to its other samples.
//!
//! Sampling follows transformers' warper order: temperature, then top-k, then top-p (on the
//! distribution renormalised over the top-k set), then min-p; the kept set is renormalised and one
//! id is drawn from it. Temperature 0 is greedy (the argmax, no truncation).
//!
//! Reported log-probs: for a sampled id, its log-probability under the distribution it was drawn
//! from (after temperature and truncation, renormalised); for greedy, under the untruncated
//! temperature-1 distribution, i.e. the model's own `log_softmax(logits)`, which is what a trainer
//! recomputes teacher-forced.
//!
//! Randomness: sample `j` of the request at index `i` draws from its own stream seeded from
//! `(seed, i, j)` ([`stream_seed`]), so a completion never depends on its batch neighbours.

use crate::cache::KvCache;

/// Truncation of the sampling distribution (after temperature). The default keeps every id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truncation {
    /// Keep the `top_k` most likely ids; 0 = off.
    pub top_k: usize,
    /// Keep the smallest most-likely set whose mass reaches `top_p`, in (0, 1]; 1 = off.
    pub top_p: f64,
    /// Keep ids with `p ≥ min_p · p_max`, in [0, 1]; 0 = off.
    pub min_p: f64,
}

impl Default for Truncation {
    fn default() -> Self {
        Truncation { top_k: 0, top_p: 1.0, min_p: 0.0 }
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stream seed of sample `sample` of prompt `prompt` under base seed `seed`: depends on
/// `seed + prompt` and `sample` only, never on the rest of the batch.
pub fn stream_seed(seed: u64, prompt: usize, sample: usize) -> u64 {
    mix(mix(seed.wrapping_add(prompt as u64)) ^ mix(sample as u64 ^ 0x5EED_5A3F_1E00_0000))
}

/// SplitMix64: a tiny, seedable stream (one per sequence).
#[derive(Debug, Clone)]
pub struct Stream(u64);

impl Stream {
    /// The stream whose state starts at `seed` (take it from [`stream_seed`]).
    pub fn new(seed: u64) -> Self {
        Stream(seed)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `log_softmax(x)` in f64.
fn log_softmax(x: &[f64]) -> Vec<f64> {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log_z = max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - log_z).collect()
}

impl Truncation {
    /// Whether this keeps every id.
    pub fn is_off(&self) -> bool {
        self.top_k == 0 && self.top_p >= 1.0 && self.min_p <= 0.0
    }

    /// The kept set of `logits (V)` at `temperature > 0`: `(id, renormalised log-prob)`, most
    /// likely first when any truncation is on (id order otherwise). Never empty.
    pub fn kept(&self, logits: &[f32], temperature: f64) -> Vec<(usize, f64)> {
        let scaled: Vec<f64> = logits.iter().map(|&l| l as f64 / temperature).collect();
        let logp = log_softmax(&scaled);
        if self.is_off() {
            return logp.into_iter().enumerate().collect();
        }
        let by_prob = |a: &usize, b: &usize| logp[*b].total_cmp(&logp[*a]).then(a.cmp(b));
        let mut order: Vec<usize> = (0..logp.len()).collect();
        if self.top_k > 0 && self.top_k < order.len() {
            order.select_nth_unstable_by(self.top_k - 1, by_prob);
            order.truncate(self.top_k);
        }
        order.sort_unstable_by(by_prob);
        if self.top_p < 1.0 {
            // Keep an id while the mass before it (renormalised over the set so far) is < top_p.
            let mass: f64 = order.iter().map(|&i| logp[i].exp()).sum();
            let mut before = 0.0;
            order.retain(|&i| {
                let keep = before < self.top_p * mass;
                before += logp[i].exp();
                keep
            });
        }
        if self.min_p > 0.0 {
            let floor = logp[order[0]] + self.min_p.ln();
            order.retain(|&i| logp[i] >= floor);
        }
        let kept: Vec<f64> = order.iter().map(|&i| logp[i]).collect();
        let max = kept[0];
        let log_z = max + kept.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        order.into_iter().map(|i| (i, logp[i] - log_z)).collect()
    }
}

/// One id from `logits (V)` and its log-probability (see the module notes), as the engine draws.
#[cfg(test)]
fn draw(logits: &[f32], temperature: f64, trunc: &Truncation, stream: &mut Stream) -> (i64, f32) {
    if temperature <= 0.0 {
        return greedy(logits);
    }
    choose(&trunc.kept(logits, temperature), stream)
}

/// The argmax of `logits (V)` (the first on ties) and its untruncated log-probability
/// `log_softmax(logits)[id]`, computed in f64.
pub fn greedy(logits: &[f32]) -> (i64, f32) {
    let mut id = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[id] {
            id = i;
        }
    }
    let row: Vec<f64> = logits.iter().map(|&l| l as f64).collect();
    (id as i64, log_softmax(&row)[id] as f32)
}

/// Draws one id from a kept set (`(id, renormalised log-prob)`, as [`Truncation::kept`] returns
/// it) with one uniform of `stream`: the first id whose cumulative probability exceeds it.
pub fn choose(kept: &[(usize, f64)], stream: &mut Stream) -> (i64, f32) {
    let u = stream.uniform();
    let mut acc = 0.0f64;
    for &(id, lp) in kept {
        acc += lp.exp();
        if u < acc {
            return (id as i64, lp as f32);
        }
    }
    // Rounding left the total just under u: take the last kept id with mass.
    let &(id, lp) = kept.iter().rev().find(|(_, lp)| lp.is_finite()).expect("some token has mass");
    (id as i64, lp as f32)
}

/// Copies slot `from`'s cached tokens into each of `to` (empty slots) and sets their lengths: a
/// prompt prefilled once serves all its samples.
pub fn copy_slot(cache: &mut KvCache, from: usize, to: &[usize]) {
    if to.is_empty() {
        return;
    }
    let len = cache.len(from) as i64;
    for layer in &mut cache.layers {
        for store in [&mut layer.latent, &mut layer.pe, &mut layer.index] {
            let src = store.get(from as i64).narrow(0, 0, len); // (P, ·)
            for &slot in to {
                store.get(slot as i64).narrow(0, 0, len).copy_(&src);
            }
        }
    }
    cache.advance(to, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// softmax([2, 1, 0.5, 0, -1]) ≈ [0.5630, 0.2071, 0.1256, 0.0762, 0.0280].
    const LOGITS: [f32; 5] = [0.5, 2.0, -1.0, 1.0, 0.0];

    fn ids(kept: &[(usize, f64)]) -> Vec<usize> {
        kept.iter().map(|&(i, _)| i).collect()
    }

    fn probs(kept: &[(usize, f64)]) -> Vec<f64> {
        kept.iter().map(|&(_, lp)| lp.exp()).collect()
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p_and_renormalises() {
        let t = Truncation { top_p: 0.8, ..Truncation::default() };
        let kept = t.kept(&LOGITS, 1.0);
        // Mass before each id, most likely first: 0, 0.5630, 0.7701, 0.8957: the first three stay.
        assert_eq!(ids(&kept), vec![1, 3, 0]);
        let (a, b, c) = (2f64.exp(), 1f64.exp(), 0.5f64.exp());
        let want = [a / (a + b + c), b / (a + b + c), c / (a + b + c)];
        for (got, want) in probs(&kept).iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        // Around the mass of the top two: just below it the second id reaches p and closes the set.
        let z: f64 = [2.0f64, 1.0, 0.5, 0.0, -1.0].iter().map(|v| v.exp()).sum();
        let below = Truncation { top_p: (a + b) / z - 1e-9, ..Truncation::default() };
        assert_eq!(ids(&below.kept(&LOGITS, 1.0)), vec![1, 3]);
        let above = Truncation { top_p: (a + b) / z + 1e-9, ..Truncation::default() };
        assert_eq!(ids(&above.kept(&LOGITS, 1.0)), vec![1, 3, 0]);
        let tiny = Truncation { top_p: 1e-9, ..Truncation::default() };
        assert_eq!(ids(&tiny.kept(&LOGITS, 1.0)), vec![1]);
    }

    #[test]
    fn top_k_then_top_p_then_min_p() {
        let k2 = Truncation { top_k: 2, ..Truncation::default() };
        assert_eq!(ids(&k2.kept(&LOGITS, 1.0)), vec![1, 3]);
        // Within the top-3 the mass is renormalised: before-masses 0, 0.6285, 0.8597 → keep two at 0.85.
        let kp = Truncation { top_k: 3, top_p: 0.85, ..Truncation::default() };
        assert_eq!(ids(&kp.kept(&LOGITS, 1.0)), vec![1, 3]);
        // min-p 0.2: p ≥ 0.2 · 0.5630 = 0.1126 keeps 0.5630, 0.2071, 0.1256.
        let mp = Truncation { min_p: 0.2, ..Truncation::default() };
        assert_eq!(ids(&mp.kept(&LOGITS, 1.0)), vec![1, 3, 0]);
        let all = Truncation::default().kept(&LOGITS, 1.0);
        assert_eq!(ids(&all), vec![0, 1, 2, 3, 4]);
        assert!((probs(&all).iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn temperature_scales_before_truncation() {
        // At T = 2 the logits halve: softmax([1, 0.5, 0.25, 0, -0.5]).
        let kept = Truncation::default().kept(&LOGITS, 2.0);
        let z: f64 = [1.0f64, 0.5, 0.25, 0.0, -0.5].iter().map(|v| v.exp()).sum();
        assert!((kept[1].1 - (1.0 - z.ln())).abs() < 1e-12);
    }

    #[test]
    fn draws_follow_the_kept_distribution_and_greedy_takes_the_argmax() {
        let t = Truncation { top_p: 0.8, ..Truncation::default() };
        let mut stream = Stream(stream_seed(3, 0, 0));
        let mut counts = [0usize; 5];
        for _ in 0..20_000 {
            let (id, _) = draw(&LOGITS, 1.0, &t, &mut stream);
            counts[id as usize] += 1;
        }
        assert_eq!(counts[2] + counts[4], 0, "truncated ids are never drawn");
        let p1 = counts[1] as f64 / 20_000.0;
        assert!((p1 - 7.389 / 11.756).abs() < 0.02, "{p1}");
        let (id, lp) = draw(&LOGITS, 0.0, &t, &mut stream);
        assert_eq!(id, 1);
        assert!((lp as f64 - (2.0 - 13.1236f64.ln())).abs() < 1e-4, "greedy log-prob is untruncated");
    }

    #[test]
    fn stream_seeds_differ_per_prompt_and_sample() {
        let seeds = [stream_seed(0, 0, 0), stream_seed(0, 1, 0), stream_seed(0, 0, 1), stream_seed(1, 0, 0)];
        assert_eq!(seeds[1], seeds[3], "prompt i with seed s is prompt 0 with seed s + i");
        assert_ne!(seeds[0], seeds[1]);
        assert_ne!(seeds[0], seeds[2]);
        assert_ne!(seeds[1], seeds[2]);
    }
}
