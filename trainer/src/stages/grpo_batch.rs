//! The batch phase of a GRPO step: sampled completions become training rows, and a set of rows
//! becomes the tensors of one forward — the row/position arithmetic that must line up with the
//! engine's records.
//!
//! A row is `prompt (P) + completion (C)` tokens. The forward reads inputs `row[..P+C−1]` and
//! scores targets `row[1..]`, so completion token j is predicted at input position `P − 1 + j`:
//! the response mask, π_old (the engine's sampling log-prob of token j), the kept set of token j
//! (keep sampling mask) all sit at that position; the routing replay covers input positions
//! `0..P+C−1` in order (the engine records the experts of the position each token was sampled
//! from). Rows are right-padded to the longest; padding is masked out of the loss and, for the
//! indexer loss, out of the real positions. No row's completion starts before input position
//! `f` = the shortest prompt − 1, so the head runs on positions `f..L` only
//! (`ForwardOptions::head_from`): the targets, response mask, π_old and kept sets are over those
//! L − f positions, position `f + i` at column i.
//!
//! The G rows of a group repeat its prompt. Where the forward allows it (no indexer selecting
//! keys, no indexer loss), [`Batch::new`] with [`Layout::Trees`] runs each group as one prefix tree
//! (`rlvr_model::packing`): the prompt once, then each completion; the head reads the rows back,
//! so every (B, L') tensor above is the same in either layout. Rows share a tree when their
//! prompts are equal and so is their recorded routing over the prompt.

use crate::batch::pad_rows;
use crate::grpo;
use rlvr_model::packing::{bundles_of, pack, worth_packing, Packed, Packing};
use rlvr_model::{AttentionMode, DeepseekV32, ForwardOptions, KeptSets, VocabMask};
use rlvr_rollout::engine::RequestOutput;
use tch::{Device, Kind, Tensor};

/// A tree's length that is always allowed (see `trees`).
const TREE_LEN: usize = 1024;

/// One sampled sequence, ready for training.
pub struct Row {
    /// Prompt then completion ids.
    pub tokens: Vec<i64>,
    /// Prompt length P.
    pub prompt_len: usize,
    /// The engine's log-prob of each completion token (π_old).
    pub logp_old: Vec<f32>,
    /// Each completion token's kept set (empty = whole vocabulary).
    pub kept: Vec<Vec<i64>>,
    /// Per main layer, the rollout's experts over positions 0..P+C−1: (1, P+C−1, K).
    pub replay: Option<Vec<Option<Tensor>>>,
    /// Its group-relative advantage.
    pub advantage: f32,
}

/// A group's rows (one per sample of `out`, whose prompt is `prompt`) with their advantages.
pub fn group_rows(
    model: &DeepseekV32,
    prompt: &[i64],
    out: &RequestOutput,
    rewards: &[f32],
    mode: grpo::AdvantageMode,
) -> Vec<Row> {
    let g = rewards.len() as i64;
    let adv = grpo::group_advantages(&Tensor::from_slice(rewards).view([1, g]), mode); // (1, G)
    let adv: Vec<f32> = Vec::<f32>::try_from(adv.flatten(0, -1)).expect("f32 advantages");
    out.samples
        .iter()
        .zip(adv)
        .map(|(s, advantage)| {
            let mut tokens = prompt.to_vec();
            tokens.extend(s.ids());
            Row {
                tokens,
                prompt_len: prompt.len(),
                logp_old: s.logprobs(),
                kept: s.tokens.iter().map(|t| t.kept.clone().unwrap_or_default()).collect(),
                replay: s.replay(model),
                advantage,
            }
        })
        .collect()
}

/// How a [`Batch`] lays its rows out for the forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One right-padded row per sequence.
    Rows,
    /// Rows that share a prompt as one prefix tree, when that saves tokens (module header).
    Trees,
}

/// The tensors of one forward over a set of rows. (B, L): B rows, L = longest row − 1; the head's
/// positions are `head_from..L`, (B, L') with L' = L − head_from.
pub struct Batch {
    /// The forward's ids: the rows (B, L), right-padded with 0, or the packed trees (N, T).
    pub inputs: Tensor,
    /// The trees' layout, when the rows were packed.
    pub packing: Option<Packing>,
    /// The first input position any row's completion is predicted at (the shortest prompt − 1):
    /// `ForwardOptions::head_from` of the batch's forward.
    pub head_from: i64,
    /// Target ids (B, L'): each row shifted by one, from position `head_from`.
    pub targets: Tensor,
    /// 1 at the head positions that predict a completion token (B, L') f32.
    pub mask: Tensor,
    /// π_old of the completion tokens at those positions, 0 elsewhere (B, L') f32.
    pub logp_old: Tensor,
    /// One advantage per row (B) f32.
    pub advantages: Tensor,
    /// The kept sets at the completion positions, over the head's L' positions (compressed rows, on
    /// the host); `None` when nothing was truncated.
    pub vocab_mask: Option<VocabMask>,
    /// The recorded routing per main layer, in the forward's layout ((B, L, K) or (N, T, K));
    /// `None` when it was not recorded.
    pub replay: Option<Vec<Option<Tensor>>>,
    /// Which input positions hold real tokens (B, L) bool.
    pub real: Tensor,
}

impl Batch {
    /// The batch of `rows` on `device` in `layout`; `experts_per_token` is the model's K.
    pub fn new(rows: &[&Row], experts_per_token: i64, device: Device, layout: Layout) -> Batch {
        let inputs: Vec<Vec<i64>> = rows.iter().map(|r| r.tokens[..r.tokens.len() - 1].to_vec()).collect();
        let targets: Vec<Vec<i64>> = rows.iter().map(|r| r.tokens[1..].to_vec()).collect();
        let (x, _) = pad_rows(&inputs, 0, device); // (B, L)
        let (y, _) = pad_rows(&targets, 0, device); // (B, L)
        let (b, l) = (x.size()[0], x.size()[1]);
        let from = rows.iter().map(|r| r.prompt_len.max(1) - 1).min().unwrap_or(0).min(l.max(1) as usize - 1);
        let width = l - from as i64; // L'
        let mut mask = vec![0f32; (b * width) as usize];
        let mut old = vec![0f32; (b * width) as usize];
        for (r, row) in rows.iter().enumerate() {
            for (j, lp) in row.logp_old.iter().enumerate() {
                let at = r * width as usize + row.prompt_len - 1 + j - from;
                mask[at] = 1.0;
                old[at] = *lp;
            }
        }
        let adv: Vec<f32> = rows.iter().map(|r| r.advantage).collect();
        let replay = replay_of(rows, l, experts_per_token, device);
        let trees = (layout == Layout::Trees).then(|| trees(rows, &inputs, from, device)).flatten();
        let (x, packing, replay) = match trees {
            None => (x, None, replay),
            Some(packed) => {
                let (n, t) = (packed.tokens.size()[0], packed.tokens.size()[1]);
                let fill = Tensor::arange(experts_per_token, (Kind::Int64, device));
                let replay = replay.map(|layers| {
                    let pack = |r: &Tensor| Packing::pack_record(&packed.sources, r, n, t, &fill);
                    layers.iter().map(|r| r.as_ref().map(pack)).collect()
                });
                (packed.tokens, Some(packed.packing), replay)
            }
        };
        Batch {
            inputs: x,
            packing,
            head_from: from as i64,
            targets: y.narrow(1, from as i64, width),
            mask: Tensor::from_slice(&mask).view([b, width]).to_device(device),
            logp_old: Tensor::from_slice(&old).view([b, width]).to_device(device),
            advantages: Tensor::from_slice(&adv).to_device(device),
            vocab_mask: kept_mask(rows, from, width),
            replay,
            real: Tensor::from_slice(&real_positions(rows, l)).view([b, l]).to_device(device),
        }
    }

    /// The options of this batch's forward in `mode`: its layout, head, vocabulary mask and
    /// replay (add the indexer loss where the stage has one).
    pub fn options(&self, mode: AttentionMode) -> ForwardOptions<'_> {
        ForwardOptions {
            vocab_mask: self.vocab_mask.as_ref(),
            replay: self.replay.as_deref(),
            head_from: if self.packing.is_some() { 0 } else { self.head_from },
            packing: self.packing.as_ref(),
            ..ForwardOptions::new(mode)
        }
    }

    /// log π of each target under `logits (B, L', V)`, (B, L') f32, and the full log-softmax.
    pub fn target_logprobs(&self, logits: &Tensor) -> (Tensor, Tensor) {
        let logp_all = logits.log_softmax(-1, Kind::Float); // (B, L, V)
        let logp = logp_all.gather(-1, &self.targets.unsqueeze(-1), false).squeeze_dim(-1); // (B, L)
        (logp, logp_all)
    }

    /// The mean over the completion positions of `entropy (B, L)`, each position's entropy
    /// ([`rlvr_model::recompute::token_entropy`]).
    pub fn mean_entropy(&self, entropy: &Tensor) -> f64 {
        tch::no_grad(|| {
            ((entropy * &self.mask).sum(Kind::Float) / self.mask.sum(Kind::Float).clamp_min(1.0)).double_value(&[])
        })
    }
}

/// The rows' `inputs` as prefix trees, one per run of rows with equal prompts and prompt routings,
/// the head from row position `from`; `None` when that would not pay (`worth_packing`).
fn trees(rows: &[&Row], inputs: &[Vec<i64>], from: usize, device: Device) -> Option<Packed> {
    let ids: Vec<&[i64]> = inputs.iter().map(Vec::as_slice).collect();
    let prompts: Vec<usize> = rows.iter().map(|r| r.prompt_len).collect();
    // Attention under the tree mask grows with the square of a tree's length: a tree is at most
    // twice the longest row, or TREE_LEN when that is longer (below it attention is a small part
    // of a layer's work at every size of the family).
    let longest = ids.iter().map(|r| r.len()).max().unwrap_or(0);
    let cap = (2 * longest).max(TREE_LEN);
    let bundles = bundles_of(&ids, &prompts, cap, |a, b| same_prompt_routing(rows[a], rows[b]));
    worth_packing(&ids, &bundles).then(|| pack(&ids, &bundles, from, device))
}

/// Whether rows `a` and `b` (equal prompts) routed their prompt alike in the rollout: packed, the
/// prompt's tokens replay one record. Rows without records always do.
fn same_prompt_routing(a: &Row, b: &Row) -> bool {
    let (Some(ra), Some(rb)) = (&a.replay, &b.replay) else { return a.replay.is_none() && b.replay.is_none() };
    let p = a.prompt_len as i64;
    ra.iter().zip(rb).all(|(x, y)| match (x, y) {
        (Some(x), Some(y)) => x.narrow(1, 0, p).equal(&y.narrow(1, 0, p)),
        (None, None) => true,
        _ => false,
    })
}

/// Which of the (B, L) input positions hold real tokens (not padding).
fn real_positions(rows: &[&Row], l: i64) -> Vec<bool> {
    rows.iter().flat_map(|r| (0..l as usize).map(move |i| i + 1 < r.tokens.len())).collect()
}

/// The rows' kept sets as a vocabulary mask over the head's (B, `width`) positions (input position
/// `from + i` at column i), compressed (one offset per
/// position, the ids of each set once; on the host until the loss head reads a chunk of rows);
/// `None` when nothing was truncated.
fn kept_mask(rows: &[&Row], from: usize, width: i64) -> Option<VocabMask> {
    if rows.iter().all(|r| r.kept.iter().all(Vec::is_empty)) {
        return None;
    }
    let sets = rows.iter().enumerate().flat_map(|(b, row)| {
        row.kept.iter().enumerate().map(move |(j, kept)| ((b, row.prompt_len - 1 + j - from), kept.as_slice()))
    });
    Some(VocabMask::Kept(KeptSets::new(rows.len(), width as usize, sets)))
}

/// The rows' recorded routings stacked per layer, padded to L positions with experts 0..K.
fn replay_of(rows: &[&Row], l: i64, k: i64, device: Device) -> Option<Vec<Option<Tensor>>> {
    let per_row: Vec<&Vec<Option<Tensor>>> = rows.iter().map(|r| r.replay.as_ref()).collect::<Option<_>>()?;
    let layers = per_row[0].len();
    let layer = |layer: usize| -> Option<Tensor> {
        per_row[0][layer].as_ref()?;
        let parts: Vec<Tensor> = per_row
            .iter()
            .map(|r| {
                let t = r[layer].as_ref().expect("every row routes the same layers").to_device(device); // (1, n, K)
                let n = t.size()[1];
                let pad = Tensor::arange(k, (Kind::Int64, device)).view([1, 1, k]).expand([1, l - n, k], true);
                Tensor::cat(&[t, pad], 1) // (1, L, K)
            })
            .collect();
        Some(Tensor::cat(&parts, 0)) // (B, L, K)
    };
    Some((0..layers).map(layer).collect())
}
