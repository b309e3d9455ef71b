//! Prefix-tree packing (`rlvr_model::packing`) against the row layout on the tiny preset (MoE,
//! indexer): rows that share prompts give the same logits, the same routing and the same
//! parameter gradients packed as they give one per row, the checkpointed backward included.
//!
//! Bound: the two layouts add the same terms in different orders (a packed prompt's gradient is
//! the sum of its rows' in one product; GEMMs over other row counts block differently), so they
//! agree to f32 rounding, not bit for bit: logits within 1e-5, each gradient within 1e-4 of its
//! tensor's largest entry.

mod common;

use rlvr_model::packing::{bundles_of, pack, worth_packing, Bundle, Packing};
use rlvr_model::recompute::{LossHead, MainHead};
use rlvr_model::{AttentionMode, DeepseekV32, ForwardOptions, ModelConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn tiny() -> (VarStore, DeepseekV32) {
    tch::set_num_threads(2);
    tch::manual_seed(7);
    let cfg = ModelConfig::from_path(&common::preset("tiny")).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = DeepseekV32::new(&vs.root(), &cfg).unwrap();
    (vs, model)
}

/// Two prompts (5 and 3 ids) with 3 and 2 completions of uneven lengths, one a single id (the
/// row is its prompt alone), and a lone row of its own: the input ids of each row.
fn rows() -> (Vec<Vec<i64>>, Vec<usize>) {
    let p1 = vec![3, 17, 99, 5, 42];
    let p2 = vec![8, 250, 31];
    let with = |p: &[i64], tail: &[i64]| [p, tail].concat();
    let rows = vec![
        with(&p1, &[7, 8, 9, 10]),
        with(&p1, &[11]),
        with(&p1, &[]),
        with(&p2, &[400, 401, 402, 403, 404, 405]),
        with(&p2, &[12, 13]),
        with(&[60, 61], &[62, 63, 64]),
    ];
    (rows, vec![5, 5, 5, 3, 3, 2])
}

/// Right-padded (B, L) ids.
fn padded(rows: &[Vec<i64>]) -> Tensor {
    let l = rows.iter().map(Vec::len).max().unwrap();
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat(0)).take(l)).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, l as i64])
}

/// 1 where row b has a real token at head column i (position `from + i`): (B, L') f32.
fn real(rows: &[Vec<i64>], from: usize) -> Tensor {
    let l = rows.iter().map(Vec::len).max().unwrap();
    let flat: Vec<f32> =
        rows.iter().flat_map(|r| (from..l).map(move |i| if i < r.len() { 1.0 } else { 0.0 })).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, (l - from) as i64])
}

/// A loss over the head's (B, L', V) logits: weighted log-probs of made-up targets at real columns.
fn loss(logits: &Tensor, mask: &Tensor) -> Tensor {
    let targets = Tensor::arange(logits.size()[1], (Kind::Int64, Device::Cpu)).unsqueeze(0) * 7 + 3; // (1, L')
    let targets = targets.expand([logits.size()[0], logits.size()[1]], true);
    let logp = logits.log_softmax(-1, Kind::Float).gather(-1, &targets.unsqueeze(-1), false).squeeze_dim(-1);
    let w = Tensor::arange(logits.size()[0], (Kind::Float, Device::Cpu)).unsqueeze(1) * 0.3 + 0.5;
    (logp * w * mask).sum(Kind::Float) / mask.sum(Kind::Float)
}

fn grads(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut g: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, v)| {
            let grad = v.grad();
            (name, if grad.defined() { grad.copy() } else { v.zeros_like() })
        })
        .collect();
    g.sort_by(|a, b| a.0.cmp(&b.0));
    vs.variables().into_values().for_each(|mut v| v.zero_grad());
    g
}

fn assert_grads_close(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(b) {
        let scale = x.abs().max().double_value(&[]).max(1e-12);
        let d = (x - y).abs().max().double_value(&[]);
        assert!(d <= 1e-4 * scale, "{name}: gradients differ by {d:e} (largest entry {scale:e})");
    }
}

fn packed_of(rows: &[Vec<i64>], prompts: &[usize], from: usize) -> (rlvr_model::Packed, Vec<Bundle>) {
    let refs: Vec<&[i64]> = rows.iter().map(Vec::as_slice).collect();
    let bundles = bundles_of(&refs, prompts, usize::MAX, |_, _| true);
    (pack(&refs, &bundles, from, Device::Cpu), bundles)
}

#[test]
fn bundles_follow_equal_prompts_and_packing_saves_tokens() {
    let (rows, prompts) = rows();
    let refs: Vec<&[i64]> = rows.iter().map(Vec::as_slice).collect();
    let bundles = bundles_of(&refs, &prompts, usize::MAX, |_, _| true);
    let want = vec![
        Bundle { first: 0, len: 3, shared: 5 },
        Bundle { first: 3, len: 2, shared: 3 },
        Bundle { first: 5, len: 1, shared: 2 },
    ];
    assert_eq!(bundles, want);
    assert!(worth_packing(&refs, &bundles));
    // A veto splits a bundle.
    let split = bundles_of(&refs, &prompts, usize::MAX, |a, _| a != 0);
    assert_eq!(split[0], Bundle { first: 0, len: 1, shared: 5 });
    assert_eq!(split[1], Bundle { first: 1, len: 2, shared: 5 });
    // So does the length cap: rows 0 and 1 pack into 10 ids, row 2 adds none; row 4 would take
    // bundle 1 to 11 > 10.
    let capped = bundles_of(&refs, &prompts, 10, |_, _| true);
    assert_eq!(capped[0], Bundle { first: 0, len: 3, shared: 5 });
    assert_eq!(capped[1], Bundle { first: 3, len: 1, shared: 3 });
    assert_eq!(capped[2], Bundle { first: 4, len: 1, shared: 3 });
    // Long trees keep the row layout: their mask would pass the limit.
    let long: Vec<i64> = (0..3000).collect();
    let long_rows: Vec<&[i64]> = vec![&long, &long];
    let one = bundles_of(&long_rows, &[1000, 1000], usize::MAX, |_, _| true);
    assert_eq!(one.len(), 1);
    assert!(!worth_packing(&long_rows, &one), "a 5000-token tree (of 6000 row tokens): its mask is over the limit");
    let packed = pack(&refs, &bundles, 1, Device::Cpu);
    // Bundle 0: 5 prompt ids + 4 + 1 + 0 suffix ids = 10; bundle 1: 3 + 6 + 2 = 11.
    assert_eq!(packed.tokens.size(), [3, 11]);
    let pos = Vec::<i64>::try_from(packed.packing.positions.get(1)).unwrap();
    assert_eq!(pos, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 3, 4]);
    // The second row of bundle 1 sees the prompt and itself, not the first row's suffix.
    let seen = Vec::<bool>::try_from(packed.packing.allowed.get(1).get(10)).unwrap();
    assert_eq!(seen, vec![true, true, true, false, false, false, false, false, false, true, true]);
}

#[test]
fn packed_rows_give_the_row_layouts_logits_routing_and_gradients() {
    let (vs, model) = tiny();
    let (rows, prompts) = rows();
    let from = 1; // the shortest prompt − 1
    let mask = real(&rows, from);
    let tokens = padded(&rows);
    let (packed, _) = packed_of(&rows, &prompts, from);
    assert!(packed.tokens.size()[1] <= model.config.index_topk as i64, "sparse attention selects every key");

    for mode in [AttentionMode::Dense, AttentionMode::Sparse] {
        let plain = model.run(&tokens, ForwardOptions { head_from: from as i64, ..ForwardOptions::new(mode) });
        loss(&plain.logits, &mask).backward();
        let want = grads(&vs);
        let tree =
            model.run(&packed.tokens, ForwardOptions { packing: Some(&packed.packing), ..ForwardOptions::new(mode) });
        assert_eq!(tree.logits.size(), plain.logits.size());
        let d = ((&tree.logits - &plain.logits) * mask.unsqueeze(-1)).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{mode:?}: logits differ by {d:e}");
        loss(&tree.logits, &mask).backward();
        assert_grads_close(&grads(&vs), &want);

        // The router sees the same hidden states: the row layout's expert ids, packed, are the
        // packed forward's own (padding aside).
        let k = model.config.num_experts_per_tok as i64;
        let (n, t) = (packed.tokens.size()[0], packed.tokens.size()[1]);
        let real_packed: Vec<bool> = packed.sources.iter().map(Option::is_some).collect();
        let real_packed = Tensor::from_slice(&real_packed).view([n, t, 1]);
        for (row_ids, tree_ids) in plain.expert_ids().iter().zip(tree.expert_ids()) {
            let (Some(row_ids), Some(tree_ids)) = (row_ids, tree_ids) else { continue };
            let fill = Tensor::arange(k, (Kind::Int64, Device::Cpu));
            let moved = Packing::pack_record(&packed.sources, row_ids, n, t, &fill);
            let (a, b) = (moved.sort(-1, false).0, tree_ids.sort(-1, false).0);
            assert!(a.eq_tensor(&b).logical_or(&real_packed.logical_not()).all().int64_value(&[]) == 1);
        }
    }
}

#[test]
fn a_packed_checkpointed_backward_equals_the_plain_packed_one() {
    let (vs, model) = tiny();
    let (rows, prompts) = rows();
    let from = 1;
    let mask = real(&rows, from);
    let (packed, _) = packed_of(&rows, &prompts, from);
    let opts = || ForwardOptions { packing: Some(&packed.packing), ..ForwardOptions::new(AttentionMode::Dense) };
    let targets = (Tensor::arange(mask.size()[1], (Kind::Int64, Device::Cpu)).unsqueeze(0) * 7 + 3)
        .expand([mask.size()[0], mask.size()[1]], true);
    let w = Tensor::arange(mask.size()[0], (Kind::Float, Device::Cpu)).unsqueeze(1) * 0.3 + 0.5;
    let main_loss = |logp: &Tensor| (logp * &w * &mask).sum(Kind::Float) / mask.sum(Kind::Float);

    let plain = model.run(&packed.tokens, opts());
    main_loss(&plain.logits.log_softmax(-1, Kind::Float).gather(-1, &targets.unsqueeze(-1), false).squeeze_dim(-1))
        .backward();
    let want = grads(&vs);
    let mut f = |logp: &Tensor| main_loss(logp);
    let head = LossHead {
        main: Some(MainHead { targets: &targets, chunk: 2, entropy: false, loss: &mut f }),
        mtp: None,
        indexer: None,
    };
    model.backward_checkpointed(&packed.tokens, opts(), head);
    assert_grads_close(&grads(&vs), &want);

    // The frozen reference's chunked log-probs read the same rows back.
    let chunked = model.target_logprobs_chunked(&packed.tokens, opts(), &targets, 3);
    let whole = tch::no_grad(|| {
        plain.logits.log_softmax(-1, Kind::Float).gather(-1, &targets.unsqueeze(-1), false).squeeze_dim(-1)
    });
    let d = (chunked - whole).abs().max().double_value(&[]);
    assert!(d < 1e-5, "chunked reference log-probs differ by {d:e}");
}

#[test]
#[should_panic(expected = "indexer selecting keys")]
fn a_packed_forward_with_the_indexer_selecting_is_refused() {
    let (_vs, model) = tiny();
    let long: Vec<i64> = (2..40).collect();
    let rows = vec![long.clone(), long];
    let (packed, _) = packed_of(&rows, &[30, 30], 0);
    model.run(
        &packed.tokens,
        ForwardOptions { packing: Some(&packed.packing), ..ForwardOptions::new(AttentionMode::Sparse) },
    );
}
