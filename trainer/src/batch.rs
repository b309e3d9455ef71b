//! Token batches for the supervised stages: a packed token stream (pretrain and the DSA stages),
//! prompt + response rows with a response-only loss mask (SFT), and right-padded rows.

use tch::{Device, Kind, Tensor};

/// `rows` right-padded with `pad` to the longest: (B, L) i64 on `device`, and each row's length.
pub fn pad_rows(rows: &[Vec<i64>], pad: i64, device: Device) -> (Tensor, Vec<usize>) {
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut flat = vec![pad; rows.len() * longest];
    for (r, row) in rows.iter().enumerate() {
        flat[r * longest..r * longest + row.len()].copy_from_slice(row);
    }
    let tokens = Tensor::from_slice(&flat).view([rows.len() as i64, longest as i64]).to_device(device); // (B, L)
    (tokens, rows.iter().map(Vec::len).collect())
}

/// A (B, L − 1) f32 mask over next-token positions: position i (predicting token i + 1) counts
/// when `from[b] ≤ i + 1 < to[b]`, i.e. token i + 1 lies in row b's `[from, to)` span.
pub fn span_mask(spans: &[(usize, usize)], len: usize, device: Device) -> Tensor {
    let width = len.saturating_sub(1);
    let mut flat = vec![0f32; spans.len() * width];
    for (r, &(from, to)) in spans.iter().enumerate() {
        for t in from.max(1)..to.min(len) {
            flat[r * width + t - 1] = 1.0;
        }
    }
    Tensor::from_slice(&flat).view([spans.len() as i64, width as i64]).to_device(device)
    // (B, L−1)
}

/// Packs documents into `batch` rows of `seq_len + 1` tokens: each document is `bos, ids…, eos`,
/// documents follow each other across row boundaries, and the tail of the last one is dropped.
/// `next` yields the documents' ids; returns the (B, seq_len + 1) tokens and how many documents
/// were consumed.
pub fn pack_stream(
    mut next: impl FnMut() -> anyhow::Result<Vec<i64>>,
    bos: i64,
    eos: i64,
    batch: usize,
    seq_len: usize,
    device: Device,
) -> anyhow::Result<(Tensor, u64)> {
    let need = batch * (seq_len + 1);
    let mut flat = Vec::with_capacity(need + seq_len);
    let mut used = 0u64;
    while flat.len() < need {
        flat.push(bos);
        flat.extend(next()?);
        flat.push(eos);
        used += 1;
    }
    flat.truncate(need);
    let tokens = Tensor::from_slice(&flat).view([batch as i64, seq_len as i64 + 1]).to_device(device); // (B, S+1)
    Ok((tokens, used))
}

/// Mean of `x (B, L−1)` where `mask (B, L−1)` is 1.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Tensor {
    (x * mask).sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_mask_marks_predictions_of_the_span() {
        // Row 0: tokens 2..4 are the response, predicted from positions 1 and 2.
        let m = span_mask(&[(2, 4), (1, 2)], 5, Device::Cpu);
        let v: Vec<f32> = Vec::<f32>::try_from(m.flatten(0, -1)).unwrap();
        assert_eq!(v, vec![0., 1., 1., 0., 1., 0., 0., 0.]);
    }

    #[test]
    fn pack_stream_fills_rows_across_documents() {
        let mut docs = vec![vec![5, 6, 7], vec![8]].into_iter();
        let (t, used) = pack_stream(|| Ok(docs.next().unwrap()), 0, 1, 2, 3, Device::Cpu).unwrap();
        let v: Vec<i64> = Vec::<i64>::try_from(t.flatten(0, -1)).unwrap();
        assert_eq!(v, vec![0, 5, 6, 7, 1, 0, 8, 1]);
        assert_eq!(used, 2);
    }
}
