//! Rows that share a prefix, computed once: a forward over prefix trees.
//!
//! GRPO scores G completions of one prompt. Read as B = G rows, the prompt's tokens run through
//! every layer G times, with the same weights, the same ids and the same positions: G identical
//! results. A [`Packing`] lays such rows out as trees instead: one packed sequence per *bundle*
//! of rows, holding the shared prefix once and then each row's own suffix, each token at its
//! row's position (so RoPE sees what the row layout gave it), each suffix token seeing the
//! prefix and its own row's earlier tokens only (a `(N, T, T)` attention mask). Every per-token
//! product (projections, MoE, the indexer's keys) runs on `P + Σ_r S_r` tokens instead of
//! `G·(P + S)`; the head reads, for each row and position, the packed token that holds it, so the
//! logits come back in the row layout `(B, L')` and everything downstream (targets, masks, the
//! loss) is unchanged. Backward sums the G rows' gradients into the one prefix: the same sum the
//! row layout forms when it adds the G rows' parameter gradients, in another order, so the two
//! agree to float rounding (model/tests/packing.rs states the bound).
//!
//! Attention under the tree mask is exact only where every causal key is attended: dense
//! attention, or sparse attention over no more keys than `index_topk` (DSA then selects every
//! causal key). A packed forward with the indexer running is refused
//! ([`crate::model::check_options`]), as are a cache, the indexer losses and MTP.

use tch::{Device, Tensor};

/// The tree layout of one forward (see the module header).
#[derive(Debug)]
pub struct Packing {
    /// Each packed token's position in its row: (N, T) i64.
    pub positions: Tensor,
    /// `true` where packed key s is visible to packed query t: (N, T, T) bool.
    pub allowed: Tensor,
    /// The head's inputs: for output row b and column i, the packed token (an index into the
    /// flattened N·T tokens) holding row b's position `head_from + i`: (B, L') i64.
    pub head_rows: Tensor,
}

/// Packed ids and their layout.
#[derive(Debug)]
pub struct Packed {
    /// The forward's ids: (N, T) i64, padded with 0.
    pub tokens: Tensor,
    /// Where each row's tokens went.
    pub packing: Packing,
    /// For each packed token (row-major over (N, T)), the row and row position it came from
    /// (the bundle's first row for a prefix token); `None` for padding. What per-token records in
    /// the row layout (routing replays) are packed by.
    pub sources: Vec<Option<(usize, usize)>>,
}

/// [`pack`]'s branch of a prefix token.
const PREFIX: usize = usize::MAX - 1;
/// [`pack`]'s branch of a padding token.
const PAD: usize = usize::MAX;

/// A run of consecutive rows whose first `shared` ids are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The rows: `first..first + len`.
    pub first: usize,
    /// How many rows.
    pub len: usize,
    /// The prefix they share (≥ 1 and ≤ every row's length).
    pub shared: usize,
}

impl Bundle {
    /// The bundle's tree length over `rows`: the prefix once, then each row's suffix.
    pub fn packed_len(&self, rows: &[&[i64]]) -> usize {
        self.shared + rows[self.first..self.first + self.len].iter().map(|r| r.len() - self.shared).sum::<usize>()
    }
}

/// Packs `rows` (input ids; rows of one bundle equal over the bundle's `shared` prefix, checked)
/// as one tree per bundle; the head covers row positions `head_from..L`, L the longest row.
/// Panics when the bundles do not cover the rows in order or a prefix differs.
pub fn pack(rows: &[&[i64]], bundles: &[Bundle], head_from: usize, device: Device) -> Packed {
    let mut next = 0;
    for b in bundles {
        assert!(b.first == next && b.len >= 1, "bundles must cover the rows in order: {bundles:?}");
        next += b.len;
        let lead = rows[b.first];
        for (r, row) in rows.iter().enumerate().skip(b.first).take(b.len) {
            assert!(b.shared >= 1 && row.len() >= b.shared, "row {r} is shorter than its shared prefix");
            assert_eq!(row[..b.shared], lead[..b.shared], "row {r} does not share its bundle's prefix");
        }
    }
    assert_eq!(next, rows.len(), "bundles must cover every row");
    let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let width = longest.saturating_sub(head_from);
    let t = bundles.iter().map(|b| b.packed_len(rows)).max().unwrap_or(0);
    let n = bundles.len();
    let mut ids = vec![0i64; n * t];
    let mut positions = vec![0i64; n * t];
    let mut branch = vec![PAD; n * t]; // the row a token belongs to, PREFIX or PAD
    let mut sources = vec![None; n * t];
    let mut head = vec![0i64; rows.len() * width];
    for (k, b) in bundles.iter().enumerate() {
        let base = k * t;
        let lead = rows[b.first];
        for j in 0..b.shared {
            ids[base + j] = lead[j];
            positions[base + j] = j as i64;
            branch[base + j] = PREFIX;
            sources[base + j] = Some((b.first, j));
        }
        let mut at = b.shared;
        for r in b.first..b.first + b.len {
            let start = at;
            for (j, &id) in rows[r].iter().enumerate().skip(b.shared) {
                ids[base + at] = id;
                positions[base + at] = j as i64;
                branch[base + at] = r;
                sources[base + at] = Some((r, j));
                at += 1;
            }
            for i in head_from..longest {
                let packed = match i {
                    i if i < b.shared => base + i,
                    i if i < rows[r].len() => base + start + i - b.shared,
                    _ => base, // padding: any real token; its column is masked out of every loss
                };
                head[r * width + i - head_from] = packed as i64;
            }
        }
    }
    let mut allowed = vec![false; n * t * t];
    for k in 0..n {
        for q in 0..t {
            let (bq, pq) = (branch[k * t + q], positions[k * t + q]);
            for s in 0..t {
                let (bs, ps) = (branch[k * t + s], positions[k * t + s]);
                allowed[(k * t + q) * t + s] = match bq {
                    PAD => q == s, // padding sees itself only (no empty softmax row)
                    _ => bs != PAD && (bs == PREFIX || bs == bq) && ps <= pq,
                };
            }
        }
    }
    let (n, t, b, w) = (n as i64, t as i64, rows.len() as i64, width as i64);
    let packing = Packing {
        positions: Tensor::from_slice(&positions).view([n, t]).to_device(device),
        allowed: Tensor::from_slice(&allowed).view([n, t, t]).to_device(device),
        head_rows: Tensor::from_slice(&head).view([b, w]).to_device(device),
    };
    Packed { tokens: Tensor::from_slice(&ids).view([n, t]).to_device(device), packing, sources }
}

impl Packing {
    /// The head's inputs in the row layout: `h (N, T, d)` → (B, L', d).
    pub fn head_input(&self, h: &Tensor) -> Tensor {
        let (b, w) = (self.head_rows.size()[0], self.head_rows.size()[1]);
        let d = h.size()[2];
        h.reshape([-1, d]).index_select(0, &self.head_rows.reshape([-1])).view([b, w, d])
    }

    /// Packs a per-token record in the row layout, `x (B, L, …)`, into the tree layout
    /// (N, T, …) by `sources`; padding takes `fill` (one entry's worth, broadcast).
    pub fn pack_record(sources: &[Option<(usize, usize)>], x: &Tensor, n: i64, t: i64, fill: &Tensor) -> Tensor {
        let l = x.size()[1];
        let flat = x.flatten(0, 1); // (B·L, …)
        let pad_at = flat.size()[0];
        let idx: Vec<i64> = sources.iter().map(|s| s.map_or(pad_at, |(r, j)| r as i64 * l + j as i64)).collect();
        let with_fill = Tensor::cat(&[flat, fill.unsqueeze(0).to_kind(x.kind())], 0);
        let mut shape = vec![n, t];
        shape.extend(&x.size()[2..]);
        with_fill.index_select(0, &Tensor::from_slice(&idx).to_device(x.device())).view(shape.as_slice())
    }
}

/// The most entries a packing's (N, T, T) mask may have: 2^24 (16 MiB of bools). The mask and the
/// attention scores under it grow with the square of a tree's length, so long sequences keep the
/// row layout ([`worth_packing`]).
pub const MASK_LIMIT: usize = 1 << 24;

/// Bundles of consecutive rows with an equal first `prefix[r]` ids (the rows' prompts): rows r and
/// r + 1 share a bundle when their prefixes have the same length and ids, `same(r, r + 1)` allows
/// it (e.g. equal routing records over the prefix) and the bundle's packed length stays within
/// `max_len` (a row alone may be longer).
pub fn bundles_of(
    rows: &[&[i64]],
    prefix: &[usize],
    max_len: usize,
    mut same: impl FnMut(usize, usize) -> bool,
) -> Vec<Bundle> {
    let mut out: Vec<(Bundle, usize)> = Vec::new(); // with its packed length
    for r in 0..rows.len() {
        let p = prefix[r].min(rows[r].len());
        if let Some((last, len)) = out.last_mut() {
            let lead = last.first;
            let grown = *len + rows[r].len() - p;
            if p >= 1 && last.shared == p && grown <= max_len && rows[lead][..p] == rows[r][..p] && same(r - 1, r) {
                last.len += 1;
                *len = grown;
                continue;
            }
        }
        out.push((Bundle { first: r, len: 1, shared: p.max(1) }, rows[r].len()));
    }
    out.into_iter().map(|(b, _)| b).collect()
}

/// Whether packing `bundles` of `rows` pays: fewer packed tokens than the rows' padded (B, L)
/// layout, and a mask within [`MASK_LIMIT`].
pub fn worth_packing(rows: &[&[i64]], bundles: &[Bundle]) -> bool {
    let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let t = bundles.iter().map(|b| b.packed_len(rows)).max().unwrap_or(0);
    let n = bundles.len();
    n < rows.len() && n * t < rows.len() * longest && n * t * t <= MASK_LIMIT
}
