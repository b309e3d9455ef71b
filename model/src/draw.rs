//! The engine's draw (`sample.rs`) as tensor ops on the logits' own device, for a batch of rows
//! that share one temperature and truncation: only the drawn ids, their log-probs and the kept
//! sets' sizes need to come back to the host, not the (B, V) logits.
//!
//! The arithmetic is the host's, step for step, so a row draws the same id from the same uniform:
//! the f64 log-softmax of `logits / T`; with truncation, the vocabulary sorted most likely first
//! (a stable sort, so ties keep the lower id first, as the host orders them), top-k as a prefix,
//! top-p against the mass *before* each id and min-p against the top id, then the kept set
//! renormalised; the id is the first whose cumulative probability exceeds the uniform (id order
//! without truncation, most likely first with it), the last one with mass when rounding leaves the
//! total just under it. Every sum the host takes in sequence is a `cumsum` here (its last entry
//! for a total), so on the CPU the sums round alike; libtorch's vectorised `exp` and `log` may
//! differ from the host's in the last bit, which moves a draw only for a uniform within ~1e-16
//! of a boundary. Greedy is the argmax (the first on ties) and the untruncated log-prob.
//!
//! The uniforms come from each sample's host stream ([`crate::sample::Stream`]), one per drawn
//! token, as on the host, so a sample's tokens do not depend on where it was drawn.

use crate::sample::Truncation;
use tch::{Kind, Tensor};

/// One batch of draws, still on the logits' device.
#[derive(Debug)]
pub struct Draws {
    /// (B) i64: the drawn ids.
    pub ids: Tensor,
    /// (B) f64: each id's log-probability under the distribution it was drawn from (greedy: the
    /// untruncated `log_softmax(logits)`).
    pub logprobs: Tensor,
    /// With truncation on (and not greedy): `(order (B, K) i64, sizes (B) i64)`, row b's kept set
    /// being `order[b, ..sizes[b]]`, most likely first.
    pub kept: Option<(Tensor, Tensor)>,
}

/// Draws one id per row of `logits (B, V)` at `temperature` (≤ 0: greedy) after `trunc`, row b
/// with `uniforms[b]` in [0, 1) (ignored when greedy; one per row otherwise).
pub fn draw_rows(logits: &Tensor, temperature: f64, trunc: &Truncation, uniforms: &[f64]) -> Draws {
    let device = logits.device();
    let logits = logits.to_kind(Kind::Double);
    if temperature <= 0.0 {
        let ids = logits.argmax(-1, true); // (B, 1)
        let logprobs = logits.log_softmax(-1, Kind::Double).gather(-1, &ids, false);
        return Draws { ids: ids.squeeze_dim(-1), logprobs: logprobs.squeeze_dim(-1), kept: None };
    }
    assert_eq!(uniforms.len() as i64, logits.size()[0], "one uniform per row");
    let u = Tensor::from_slice(uniforms).to_device(device).unsqueeze(-1); // (B, 1)
    let logp = (logits / temperature).log_softmax(-1, Kind::Double); // (B, V)
    if trunc.is_off() {
        let ids = pick(&logp, &u);
        let logprobs = logp.gather(-1, &ids, false);
        return Draws { ids: ids.squeeze_dim(-1), logprobs: logprobs.squeeze_dim(-1), kept: None };
    }
    let v = logp.size()[1];
    let (sorted, order) = logp.sort_stable(true, -1, true);
    let width = if trunc.top_k > 0 { (trunc.top_k as i64).min(v) } else { v };
    let (sorted, order) = (sorted.narrow(-1, 0, width), order.narrow(-1, 0, width)); // (B, K)
    let mut keep = sorted.ones_like().to_kind(Kind::Bool);
    if trunc.top_p < 1.0 {
        let running = sorted.exp().cumsum(-1, Kind::Double);
        let mass = running.narrow(-1, width - 1, 1);
        let before = Tensor::cat(&[running.zeros_like().narrow(-1, 0, 1), running.narrow(-1, 0, width - 1)], -1);
        keep = keep.logical_and(&before.lt_tensor(&(mass * trunc.top_p)));
    }
    if trunc.min_p > 0.0 {
        let floor = sorted.narrow(-1, 0, 1) + trunc.min_p.ln();
        keep = keep.logical_and(&sorted.ge_tensor(&floor));
    }
    let sizes = keep.sum_dim_intlist(-1, false, Kind::Int64);
    let kept = sorted.masked_fill(&keep.logical_not(), f64::NEG_INFINITY);
    let top = kept.narrow(-1, 0, 1);
    let total = (&kept - &top).exp().cumsum(-1, Kind::Double).narrow(-1, width - 1, 1);
    let renormalised = &kept - (top + total.log()); // (B, K)
    let at = pick(&renormalised, &u);
    Draws {
        ids: order.gather(-1, &at, false).squeeze_dim(-1),
        logprobs: renormalised.gather(-1, &at, false).squeeze_dim(-1),
        kept: Some((order, sizes)),
    }
}

/// Per row of `logp (B, N)`, the position of the first entry whose cumulative probability exceeds
/// `u (B, 1)`; the last entry with mass when none does. (B, 1) i64.
fn pick(logp: &Tensor, u: &Tensor) -> Tensor {
    let n = logp.size()[1];
    let cdf = logp.exp().cumsum(-1, Kind::Double);
    let at = u.searchsorted(&cdf, false, true, "right", None::<Tensor>); // (B, 1) in 0..=N
    let has_mass = logp.isfinite().flip([-1]).to_kind(Kind::Int64);
    let last = (has_mass.argmax(-1, true) * -1) + (n - 1);
    at.where_self(&at.lt(n), &last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{choose, greedy, Stream};
    use tch::Device;

    /// Rows of varied shape: spread and peaked logits, exact ties, and −∞ entries.
    fn logits(rows: i64, vocab: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let base = Tensor::randn([rows, vocab], (Kind::Float, Device::Cpu)) * 3.0;
        // Row 0: a tie at the top between ids 3 and 7; row 1: a third of the vocabulary masked.
        let _ = base.get(0).get(3).fill_(9.0);
        let _ = base.get(0).get(7).fill_(9.0);
        let _ = base.get(1).narrow(0, 0, vocab / 3).fill_(f64::NEG_INFINITY);
        base
    }

    fn host_rows(t: &Tensor) -> Vec<Vec<f32>> {
        (0..t.size()[0]).map(|b| Vec::<f32>::try_from(t.get(b)).unwrap()).collect()
    }

    fn host_kept(d: &Draws, b: i64) -> Vec<i64> {
        let (order, sizes) = d.kept.as_ref().unwrap();
        let n = sizes.int64_value(&[b]);
        Vec::<i64>::try_from(order.get(b).narrow(0, 0, n)).unwrap()
    }

    #[test]
    fn draws_equal_the_host_draw_for_every_truncation() {
        let (rows, vocab) = (24, 301);
        let truncations = [
            Truncation::default(),
            Truncation { top_p: 0.9, ..Truncation::default() },
            Truncation { top_p: 0.3, ..Truncation::default() },
            Truncation { top_k: 5, ..Truncation::default() },
            Truncation { top_k: 40, top_p: 0.8, ..Truncation::default() },
            Truncation { min_p: 0.1, ..Truncation::default() },
            Truncation { top_k: 20, top_p: 0.95, min_p: 0.02 },
            Truncation { top_k: 1000, ..Truncation::default() },
        ];
        for (n, trunc) in truncations.iter().enumerate() {
            for temperature in [0.6, 1.0, 1.7] {
                let x = logits(rows, vocab, n as i64);
                let mut streams: Vec<Stream> = (0..rows).map(|b| Stream::new(1000 * n as u64 + b as u64)).collect();
                let uniforms: Vec<f64> = streams.clone().iter_mut().map(Stream::uniform).collect();
                let d = draw_rows(&x, temperature, trunc, &uniforms);
                let ids = Vec::<i64>::try_from(&d.ids).unwrap();
                let lps = Vec::<f64>::try_from(&d.logprobs).unwrap();
                for (b, row) in host_rows(&x).iter().enumerate() {
                    let kept = trunc.kept(row, temperature);
                    let (id, lp) = choose(&kept, &mut streams[b]);
                    assert_eq!(ids[b], id, "row {b}, {trunc:?}, T = {temperature}");
                    assert!((lps[b] - lp as f64).abs() < 1e-6, "row {b}: {} vs {lp}", lps[b]);
                    if !trunc.is_off() {
                        let want: Vec<i64> = kept.iter().map(|&(i, _)| i as i64).collect();
                        assert_eq!(host_kept(&d, b as i64), want, "kept set of row {b}, {trunc:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn greedy_is_the_first_argmax_with_the_untruncated_log_prob() {
        let x = logits(6, 50, 9);
        let d = draw_rows(&x, 0.0, &Truncation { top_p: 0.5, ..Truncation::default() }, &[]);
        assert!(d.kept.is_none());
        let ids = Vec::<i64>::try_from(&d.ids).unwrap();
        let lps = Vec::<f64>::try_from(&d.logprobs).unwrap();
        for (b, row) in host_rows(&x).iter().enumerate() {
            let (id, lp) = greedy(row);
            assert_eq!(ids[b], id);
            assert!((lps[b] - lp as f64).abs() < 1e-6);
        }
        assert_eq!(ids[0], 3, "the tie between ids 3 and 7 goes to the lower");
    }

    #[test]
    fn a_uniform_past_the_total_takes_the_last_id_with_mass() {
        // Two ids with mass and the rest −∞: a uniform of 1 − 1e-17 rounds to 1.0 in f64, past any
        // total below one, and must land on the last finite id (id 1 here), never on a masked one.
        let x = Tensor::from_slice(&[0.0f32, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]).view([1, 4]);
        let d = draw_rows(&x, 1.0, &Truncation::default(), &[1.0 - 1e-17]);
        assert_eq!(d.ids.int64_value(&[0]), 1);
        assert!((d.logprobs.double_value(&[0]) - 0.5f64.ln()).abs() < 1e-12);
        let t = Truncation { top_k: 3, ..Truncation::default() };
        let d = draw_rows(&x, 1.0, &t, &[1.0 - 1e-17]);
        assert_eq!(d.ids.int64_value(&[0]), 1);
        assert_eq!(host_kept(&d, 0), vec![0, 1, 2], "top-k keeps a −∞ id when k asks for it, as the host does");
    }
}
