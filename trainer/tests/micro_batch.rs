//! `algorithm.micro_batch = 0` (the default) resolves to what fits: the whole minibatch share when
//! the plan fits the memory given, else the largest halving of it that does, and a value the recipe
//! sets is kept. Checked against the plan itself with an injected memory budget, on the smoke
//! recipe made GRPO-heavy (its GRPO activations the peak phase).

use rlvr_trainer::data::Dataset;
use rlvr_trainer::plan::{check_fits, fit_micro_batch, plan, Budget, Plan};
use rlvr_trainer::recipe::Recipe;
use std::path::Path;

/// The smoke recipe with 64 × 8 completions of up to 512 tokens per GRPO step.
fn heavy() -> (Recipe, Dataset) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/smoke.toml");
    let sets = ["rollout.prompts_per_step=64", "rollout.group_size=8", "rollout.max_tokens=512"];
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let recipe = Recipe::load(&path, &sets).unwrap();
    let data = Dataset::load_with(&recipe.data, recipe.run.seed, None).unwrap();
    (recipe, data)
}

/// What a plan needs beyond its runtime (one rank, no servers).
fn need(p: &Plan) -> f64 {
    p.peak_bytes - p.runtime_bytes
}

#[test]
fn the_default_micro_batch_is_the_largest_halving_that_fits() {
    let (recipe, data) = heavy();
    let runtime = 4e8;
    let whole = plan(&recipe, 1, "cpu", runtime, &data).unwrap();
    assert!(whole.peak_phase.contains("grpo"), "the GRPO step is the peak: {}", whole.peak_phase);
    let fit = |available: Option<f64>| {
        let budget = available.map(|a| Budget::host(a, 1));
        fit_micro_batch(&recipe, 1, "cpu", runtime, &data, budget.as_ref()).unwrap()
    };

    // Room for the whole share, or nothing known: the whole minibatch, as before.
    for available in [None, Some(need(&whole) + 1.0)] {
        let (micro, p) = fit(available);
        assert_eq!((micro, p.peak_bytes), (0, whole.peak_bytes));
    }
    // Just short of the whole share: a smaller micro-batch whose plan fits, and twice it would not.
    let available = need(&whole) - 1.0;
    let (micro, p) = fit(Some(available));
    assert!((1..512).contains(&micro), "{micro}");
    assert!(need(&p) <= available && p.peak_bytes < whole.peak_bytes);
    assert_eq!(micro.count_ones(), 1, "a halving of the share of 512: {micro}");
    let mut doubled = recipe.clone();
    doubled.algorithm.micro_batch = 2 * micro;
    assert!(need(&plan(&doubled, 1, "cpu", runtime, &data).unwrap()) > available);
    // Nothing fits: the whole share's plan, for the fit check to refuse with.
    let (micro, p) = fit(Some(1.0));
    assert_eq!((micro, p.peak_bytes), (0, whole.peak_bytes));
    // A micro-batch the recipe sets is kept, whatever the memory.
    let mut set = recipe.clone();
    set.algorithm.micro_batch = 3;
    let (micro, _) = fit_micro_batch(&set, 1, "cpu", runtime, &data, Some(&Budget::host(1.0, 1))).unwrap();
    assert_eq!(micro, 3);
}

/// A GPU's budget: one rank per device, its CUDA context already counted as used. The micro-batch
/// is chosen against the GPU's free bytes as against the host's, and a run that fits nowhere is
/// refused naming the device and where its free memory was read; the host's budget multiplies
/// the need by the ranks sharing it.
#[test]
fn a_gpu_budget_chooses_the_micro_batch_and_refuses_what_does_not_fit() {
    let (recipe, data) = heavy();
    let runtime = 512.0 * 1024.0 * 1024.0;
    let whole = plan(&recipe, 1, "cuda", runtime, &data).unwrap();
    let gpu = |available: f64| Budget {
        available,
        ranks: 1,
        servers: false,
        device: "CUDA device 1".into(),
        source: "cudaMemGetInfo",
    };
    assert_eq!(gpu(0.0).needed(&whole), need(&whole));
    let (micro, p) = fit_micro_batch(&recipe, 1, "cuda", runtime, &data, Some(&gpu(need(&whole) - 1.0))).unwrap();
    assert!((1..512).contains(&micro) && need(&p) < need(&whole), "{micro}");
    check_fits(&p, Some(&gpu(need(&whole) - 1.0))).unwrap();
    check_fits(&whole, Some(&gpu(need(&whole)))).unwrap();
    let err = check_fits(&whole, Some(&gpu(need(&whole) - 1.0))).unwrap_err().to_string();
    assert!(err.contains("does not fit CUDA device 1") && err.contains("(cudaMemGetInfo)"), "{err}");
    assert!(err.contains("peak"), "the plan's table follows: {err}");
    // The host's memory is shared by every local rank.
    let host = Budget::host(need(&whole) * 2.0 - 1.0, 2);
    assert_eq!(host.needed(&whole), 2.0 * need(&whole));
    let err = check_fits(&whole, Some(&host)).unwrap_err().to_string();
    assert!(
        err.contains("does not fit the host") && err.contains("× 2 rank(s)") && err.contains("(MemAvailable)"),
        "{err}"
    );
}
