//! One DSA selection whatever the path (docs/model.md §9, item 9): with few indexer heads the
//! indexer's scores are often exactly equal at the top-k boundary (most often all-zero ReLUs), and
//! ties go to the lower position. Property test over random small V3.2 configs, random batch
//! compositions and prompt lengths: each sequence's sparse log-probs are the same scored alone, in
//! a right-padded batch with other sequences, and through prefill plus one-token cached decode.

mod common;

use rlvr_model::{AttentionMode, DeepseekV32, KvCache, ModelConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Same as the other consistency rules of docs/architecture.md §8 (float rounding only; a
/// different tie winner moves log-probs by ~0.1–1).
const TOL: f64 = 1e-4;

/// SplitMix64, for the test's own random choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A random tiny V3.2 config with 1–2 indexer heads and a small `index_topk`.
fn random_config(rng: &mut Rng) -> ModelConfig {
    let text = std::fs::read_to_string(common::preset("tiny").join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["index_n_heads"] = rng.range(1, 2).into();
    v["index_topk"] = rng.range(3, 8).into();
    v["num_hidden_layers"] = rng.range(1, 2).into();
    v["num_nextn_predict_layers"] = 0.into();
    v["vocab_size"] = 64.into();
    ModelConfig::from_json(&v.to_string()).unwrap()
}

fn logprobs_alone(model: &DeepseekV32, seq: &[i64]) -> Vec<f64> {
    let t = Tensor::from_slice(seq).unsqueeze(0);
    Vec::<f64>::try_from(model.token_logprobs(&t, AttentionMode::Sparse).squeeze_dim(0).to_kind(Kind::Double)).unwrap()
}

/// Prefill `prompt` tokens, then feed the rest one token at a time through the cache.
fn logprobs_cached(model: &DeepseekV32, seq: &[i64], prompt: usize) -> Vec<f64> {
    let mut cache = KvCache::new(&model.config, 1, seq.len(), Kind::Float, Device::Cpu);
    let logits =
        model.forward_cached(&Tensor::from_slice(&seq[..prompt]).unsqueeze(0), &mut cache, &[0], AttentionMode::Sparse);
    let mut rows = vec![logits.get(0)]; // (prompt, V)
    for &tok in &seq[prompt..seq.len() - 1] {
        let step =
            model.forward_cached(&Tensor::from_slice(&[tok]).unsqueeze(0), &mut cache, &[0], AttentionMode::Sparse);
        rows.push(step.get(0));
    }
    let logp = Tensor::cat(&rows, 0).log_softmax(-1, Kind::Double); // (L, V)
    (0..seq.len() - 1).map(|i| logp.double_value(&[i as i64, seq[i + 1]])).collect()
}

fn worst(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn one_selection_alone_batched_and_cached() {
    tch::set_num_threads(1);
    let mut rng = Rng(2024);
    let mut ties_at_boundary = 0;
    for case in 0..12 {
        let cfg = random_config(&mut rng);
        tch::manual_seed(case);
        let vs = VarStore::new(Device::Cpu);
        let model = DeepseekV32::new(&vs.root(), &cfg).unwrap();
        let n = rng.range(2, 4) as usize;
        let seqs: Vec<Vec<i64>> = (0..n)
            .map(|_| {
                let len = rng.range(cfg.index_topk as u64 + 2, 28) as usize;
                (0..len).map(|_| rng.range(2, 63) as i64).collect()
            })
            .collect();
        tch::no_grad(|| {
            ties_at_boundary += count_boundary_ties(&model, &seqs[0]);
            let alone: Vec<Vec<f64>> = seqs.iter().map(|s| logprobs_alone(&model, s)).collect();
            // Right-padded batch of every sequence, in a random order.
            let mut order: Vec<usize> = (0..n).collect();
            order.rotate_left(rng.range(0, n as u64 - 1) as usize);
            let longest = seqs.iter().map(Vec::len).max().unwrap();
            let padded: Vec<i64> =
                order.iter().flat_map(|&i| seqs[i].iter().copied().chain(std::iter::repeat(0)).take(longest)).collect();
            let batch = Tensor::from_slice(&padded).view([n as i64, longest as i64]);
            let lp = model.token_logprobs(&batch, AttentionMode::Sparse).to_kind(Kind::Double);
            for (row, &i) in order.iter().enumerate() {
                let got = Vec::<f64>::try_from(lp.get(row as i64).narrow(0, 0, seqs[i].len() as i64 - 1)).unwrap();
                let d = worst(&got, &alone[i]);
                assert!(d <= TOL, "case {case}: sequence {i} in a padded batch differs by {d:e}");
            }
            for (i, seq) in seqs.iter().enumerate() {
                let prompt = rng.range(1, seq.len() as u64 - 1) as usize;
                let d = worst(&logprobs_cached(&model, seq, prompt), &alone[i]);
                assert!(d <= TOL, "case {case}: sequence {i} through prefill {prompt} + decode differs by {d:e}");
            }
        });
    }
    // The property is only tested if ties really reach the boundary.
    assert!(ties_at_boundary > 0, "no tie at the top-k boundary in any case");
    eprintln!("query rows with a tie at the top-k boundary (sequence 0 of each case): {ties_at_boundary}");
}

/// Rows (of layer 0, sequence `seq` alone) whose k-th and (k+1)-th causal indexer scores are equal.
fn count_boundary_ties(model: &DeepseekV32, seq: &[i64]) -> usize {
    use rlvr_model::mla::Positions;
    let t = seq.len() as i64;
    let tokens = Tensor::from_slice(seq).unsqueeze(0);
    let layer = &model.layers[0];
    let attn = &layer.self_attn;
    let idx = attn.indexer();
    let pos = Positions::new(&model.rope, Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0));
    let x = layer.input_layernorm.forward(&Tensor::embedding(&model.embed_tokens, &tokens, -1, false, false));
    let q = attn.queries(&x, &pos);
    let keys = idx.keys(&x, &pos.cos, &pos.sin);
    let scores = idx.scores(&idx.queries(&q.latent, &pos.cos, &pos.sin), &idx.head_weights(&x), &keys, &pos.q_pos);
    let sorted = scores.sort(-1, true).0.get(0); // (T, S)
    let k = idx.topk;
    (k..t).filter(|&row| sorted.double_value(&[row, k - 1]) == sorted.double_value(&[row, k])).count()
}
