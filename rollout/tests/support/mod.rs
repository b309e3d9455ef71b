//! Loading the golden fixtures (tests/fixtures) for the engine tests, and small comparisons.
#![allow(dead_code)]

use rlvr_model::checkpoint::load_varstore;
use rlvr_model::{AttentionMode, DeepseekV32, ModelConfig};
use rlvr_rollout::engine::{DrawSite, Engine, EngineConfig, Request, RequestOutput};
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{nn::VarStore, Device, Tensor};

/// A fixture's directory.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// A fixture's model in f32 on the CPU, with the store its variables live in.
pub fn load(name: &str) -> (DeepseekV32, VarStore) {
    tch::set_num_threads(1);
    let dir = fixture(name);
    let cfg = ModelConfig::from_path(&dir).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = DeepseekV32::new(&vs.root(), &cfg).unwrap();
    load_varstore(&dir, &cfg, &vs, true).unwrap();
    (model, vs)
}

/// An engine over a fixture's model with `slots` slots of 96 tokens, prefill chunks of `chunk`.
pub fn engine(name: &str, slots: usize, chunk: usize) -> Engine {
    drawing(name, slots, chunk, DrawSite::Auto)
}

/// [`engine`] drawing its tokens at `draw`.
pub fn drawing(name: &str, slots: usize, chunk: usize, draw: DrawSite) -> Engine {
    let (model, vs) = load(name);
    let config = EngineConfig { prefill_chunk: chunk, draw, ..EngineConfig::new(slots, 96) };
    Engine::new(model, &vs, config).expect("the test cache fits")
}

/// `reference.safetensors` of a fixture, by name.
pub fn reference(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture(name).join("reference.safetensors")).unwrap().into_iter().collect()
}

/// An i64 reference tensor as a vector.
pub fn ids(r: &HashMap<String, Tensor>, key: &str) -> Vec<i64> {
    Vec::<i64>::try_from(&r[key]).unwrap()
}

/// Submits every request and runs the engine dry; outputs in submission order.
pub fn run_all(engine: &mut Engine, requests: Vec<Request>) -> Vec<RequestOutput> {
    let ids: Vec<_> = requests.into_iter().map(|r| engine.submit(r).unwrap()).collect();
    let mut out = engine.run_until_done();
    out.sort_by_key(|o| o.id);
    assert_eq!(out.iter().map(|o| o.id).collect::<Vec<_>>(), ids);
    out
}

/// A sampling request: `max_tokens` tokens at temperature 1, seed `seed`, index `index`.
pub fn request(prompt: &[i64], max_tokens: usize, seed: u64, index: usize) -> Request {
    sampled(Request { seed, index, ..Request::new(prompt.to_vec()) }, |s| s.max_tokens = max_tokens)
}

/// `request` with its sampling settings changed by `change`.
pub fn sampled(mut request: Request, change: impl FnOnce(&mut rlvr_rollout::engine::SamplingParams)) -> Request {
    change(&mut request.sampling);
    request
}

/// Teacher-forced `log p(seq[i+1] | seq[..=i])` of one sequence: (L − 1) values.
pub fn teacher_forced(model: &DeepseekV32, seq: &[i64], mode: AttentionMode) -> Vec<f32> {
    let tokens = Tensor::from_slice(seq).unsqueeze(0); // (1, L)
    let lp = tch::no_grad(|| model.token_logprobs(&tokens, mode)); // (1, L − 1)
    Vec::<f32>::try_from(lp.get(0)).unwrap()
}

/// Max |a − b|.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A prompt of `len` ids drawn from 2..190 by a fixed recurrence (differs per `salt`).
pub fn prompt(len: usize, salt: u64) -> Vec<i64> {
    (0..len as u64).map(|i| 2 + ((i * 37 + salt * 101 + i * i * 11) % 188) as i64).collect()
}
