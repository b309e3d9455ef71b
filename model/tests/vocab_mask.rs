//! The compressed keep-sampling mask against the dense record it replaced: kept ids padded with −1
//! to the widest set, scattered into a whole (B, T, V) boolean mask, `masked_fill` to −∞. On
//! random kept sets of ragged widths — empty (no truncation), one id, a few, the whole vocabulary —
//! the masked log-probs of a loss and its gradient in the logits are the same bit for bit, whatever
//! the chunk of rows, over the whole grid and over a window of its positions.

use rlvr_model::{KeptSets, VocabMask};
use tch::{Device, Kind, Tensor};

const B: usize = 3;
const T: usize = 7;
const V: i64 = 40;

/// Kept sets of every position: widths drawn from {0, 1, a few, V − 1, V}, ids distinct; row 1
/// position 2 keeps the whole vocabulary and row 2 keeps nothing at all (no truncation).
fn ragged_sets(seed: u64) -> Vec<Vec<Vec<i64>>> {
    let mut state = seed;
    let mut draw = |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    (0..B)
        .map(|b| {
            (0..T)
                .map(|t| {
                    let width = match (b, t) {
                        (2, _) => 0,
                        (1, 2) => V as usize,
                        _ => [0, 1, 3, 9, V as usize - 1, V as usize][draw(6) as usize],
                    };
                    // A random permutation's first `width` ids.
                    let mut ids: Vec<i64> = (0..V).collect();
                    for i in (1..ids.len()).rev() {
                        ids.swap(i, draw(i as u64 + 1) as usize);
                    }
                    ids.truncate(width);
                    ids
                })
                .collect()
        })
        .collect()
}

fn compressed(sets: &[Vec<Vec<i64>>]) -> VocabMask {
    let entries = sets.iter().enumerate().flat_map(|(b, row)| row.iter().enumerate().map(move |(t, s)| ((b, t), s)));
    VocabMask::Kept(KeptSets::new(B, T, entries.map(|(at, s)| (at, s.as_slice()))))
}

/// The dense record: (B, T, K) ids padded with −1, K the widest set.
fn padded(sets: &[Vec<Vec<i64>>]) -> Tensor {
    let widest = sets.iter().flatten().map(Vec::len).max().unwrap();
    let mut ids = vec![-1i64; B * T * widest];
    for (r, set) in sets.iter().flatten().enumerate() {
        ids[r * widest..r * widest + set.len()].copy_from_slice(set);
    }
    Tensor::from_slice(&ids).view([B as i64, T as i64, widest as i64])
}

/// The dense formulation: padding to an extra column V cut off after the scatter, empty rows
/// keeping everything, the rest at −∞.
fn dense_masked(logits: &Tensor, ids: &Tensor) -> Tensor {
    let (b, t, v) = (logits.size()[0], logits.size()[1], logits.size()[2]);
    let ids = ids.where_scalarother(&ids.ge(0), v); // (B, T, K)
    let keep = Tensor::zeros([b, t, v + 1], (Kind::Bool, Device::Cpu)).scatter_value(2, &ids, 1).narrow(2, 0, v);
    let keep = keep.logical_or(&keep.any_dim(-1, true).logical_not()); // (B, T, V)
    logits.masked_fill(&keep.logical_not(), f64::NEG_INFINITY)
}

/// Targets inside each position's set (any id where it keeps everything), and per-position
/// loss weights.
fn targets_and_weights(sets: &[Vec<Vec<i64>>], t0: usize, len: usize) -> (Tensor, Tensor) {
    let targets: Vec<i64> = sets
        .iter()
        .flat_map(|row| {
            row[t0..t0 + len].iter().enumerate().map(|(t, s)| s.get(t % s.len().max(1)).copied().unwrap_or(t as i64))
        })
        .collect();
    let weights = Tensor::randn([B as i64, len as i64], (Kind::Float, Device::Cpu));
    (Tensor::from_slice(&targets).view([B as i64, len as i64]), weights)
}

/// `Σ w · log π(target)` and its gradient in `logits`, with the mask applied by `mask`.
fn loss_and_grad(
    logits: &Tensor,
    targets: &Tensor,
    w: &Tensor,
    mask: impl Fn(Tensor) -> Tensor,
) -> (Tensor, Tensor, Tensor) {
    let leaf = logits.detach().copy().set_requires_grad(true);
    let logp_all = mask(&leaf * 1.0).log_softmax(-1, Kind::Float); // (B, T, V)
    let logp = logp_all.gather(-1, &targets.unsqueeze(-1), false).squeeze_dim(-1); // (B, T)
    let loss = (&logp * w).sum(Kind::Float);
    loss.backward();
    (loss.detach(), logp_all.detach(), leaf.grad())
}

#[test]
fn compressed_sets_mask_as_the_dense_record_did() {
    for seed in [1, 2, 3] {
        tch::manual_seed(seed as i64);
        let sets = ragged_sets(seed);
        let logits = Tensor::randn([B as i64, T as i64, V], (Kind::Float, Device::Cpu)) * 3.0;
        let (targets, w) = targets_and_weights(&sets, 0, T);
        let ids = padded(&sets);
        let (want_loss, want_logp, want_grad) = loss_and_grad(&logits, &targets, &w, |l| dense_masked(&l, &ids));
        assert!(want_loss.double_value(&[]).is_finite());
        let mask = compressed(&sets);
        for rows in [1, 4, 5, (B * T) as i64, 1000] {
            let (loss, logp, grad) = loss_and_grad(&logits, &targets, &w, |l| mask.apply_in_chunks(l, rows));
            assert!(loss.equal(&want_loss), "seed {seed}, {rows} rows per chunk: loss {loss:?} vs {want_loss:?}");
            assert!(logp.equal(&want_logp), "seed {seed}, {rows} rows per chunk: log-probs differ");
            assert!(grad.equal(&want_grad), "seed {seed}, {rows} rows per chunk: gradients differ");
        }
        let (loss, _, grad) = loss_and_grad(&logits, &targets, &w, |l| mask.apply(l));
        assert!(loss.equal(&want_loss) && grad.equal(&want_grad), "seed {seed}: the default chunking");
    }
}

#[test]
fn a_window_of_positions_masks_as_the_dense_records_window() {
    let sets = ragged_sets(9);
    tch::manual_seed(9);
    let (t0, len) = (2usize, 4usize);
    let logits = Tensor::randn([B as i64, len as i64, V], (Kind::Float, Device::Cpu));
    let (targets, w) = targets_and_weights(&sets, t0, len);
    let ids = padded(&sets).narrow(1, t0 as i64, len as i64);
    let (want_loss, want_logp, want_grad) = loss_and_grad(&logits, &targets, &w, |l| dense_masked(&l, &ids));
    let window = compressed(&sets).narrow(t0 as i64, len as i64);
    let (loss, logp, grad) = loss_and_grad(&logits, &targets, &w, |l| window.apply_in_chunks(l, 3));
    assert!(loss.equal(&want_loss) && logp.equal(&want_logp) && grad.equal(&want_grad));
    let VocabMask::Kept(k) = &window else { unreachable!() };
    assert_eq!(k.shape(), (B, len));
    assert_eq!(k.set(1, 0), sets[1][t0].as_slice(), "the window reads its own positions");
}

#[test]
fn the_record_holds_only_the_kept_ids() {
    let sets = ragged_sets(4);
    let VocabMask::Kept(k) = compressed(&sets) else { unreachable!() };
    let kept: usize = sets.iter().flatten().map(Vec::len).sum();
    assert_eq!(k.total_ids(), kept, "no padding to the widest set");
    for (b, row) in sets.iter().enumerate() {
        for (t, set) in row.iter().enumerate() {
            assert_eq!(k.set(b, t), set.as_slice(), "({b}, {t})");
        }
    }
}

#[test]
#[should_panic(expected = "outside the vocabulary of 40")]
fn an_id_outside_the_vocabulary_is_refused() {
    let bad = [41i64];
    let mask = VocabMask::Kept(KeptSets::new(1, 1, [((0, 0), &bad[..])]));
    let _ = mask.apply(Tensor::zeros([1, 1, V], (Kind::Float, Device::Cpu)));
}
