//! `[model] add_indexer`: the V3 → V3.2 conversion inside a run. The stages before the first one
//! that needs the DSA lightning indexer train the `deepseek_v3` model; when that stage begins,
//! the policy gets freshly initialised indexers ([`crate::policy::Policy::add_indexer`]) and
//! every later checkpoint is a `deepseek_v32` one (so a resumed run finds it converted).
//!
//! The conversion is recorded in `report.json` as `add_indexer`: where it happened, the indexer
//! parameters added, and the held-out LM loss of the V3 model and of the converted model in dense
//! mode on the same text (the DSA stage's probe text), which must be equal: the indexer plays no
//! part in dense attention.

use super::dsa::probe_tokens;
use crate::recipe::{Recipe, Stage};
use crate::session::Session;
use anyhow::Result;
use rlvr_model::{AttentionMode, Family, ForwardOptions};
use serde_json::json;
use tch::Tensor;

/// Why `stage` needs the lightning indexer, if it does: sparse attention in its forward or in
/// its rollouts, or a DSA stage (which trains the indexer).
pub(crate) fn needs_indexer(recipe: &Recipe, stage: &Stage) -> Option<&'static str> {
    use AttentionMode::Sparse;
    match stage {
        Stage::Pretrain(s) if s.attention == Sparse => Some("attention = \"sparse\""),
        Stage::Sft(s) if s.attention == Sparse => Some("attention = \"sparse\""),
        Stage::Grpo(_) | Stage::Eval(_) if recipe.rollout.attention == Sparse => {
            Some("[rollout] attention = \"sparse\"")
        }
        Stage::IndexerWarmup(_) | Stage::SparseTrain(_) => Some("a DSA stage trains the lightning indexer"),
        _ => None,
    }
}

/// Converts the policy before `stage` when the recipe asks for indexers, the model has none yet
/// and `stage` is the first to need them. Does nothing otherwise.
pub(crate) fn before_stage(session: &mut Session, stage: &Stage) -> Result<()> {
    let Some(add) = session.recipe.model.add_indexer else { return Ok(()) };
    if session.policy.config.family() != Family::V3 || needs_indexer(&session.recipe, stage).is_none() {
        return Ok(());
    }
    let text = probe_text(session, stage)?;
    let loss = |session: &Session| {
        text.as_ref().map(|tokens| {
            tch::no_grad(|| {
                let out = session.policy.model.run(tokens, ForwardOptions::new(AttentionMode::Dense));
                out.lm_loss(tokens).double_value(&[])
            })
        })
    };
    let before = loss(session);
    let seed = add.seed.unwrap_or(session.state.seeds.init);
    let added = session.policy.add_indexer(&add.spec(), seed, session.recipe.run.dtype)?;
    let after = loss(session);
    session.say(&format!(
        "added lightning indexers before stage `{}`: {added} parameters ({} heads × {}, top-k {}, seed {seed}); the model is deepseek_v32 now",
        stage.name(),
        add.n_heads,
        add.head_dim,
        add.topk
    ));
    if let (Some(v3), Some(dense)) = (before, after) {
        session.say(&format!("held-out LM loss: deepseek_v3 {v3:.4}, converted (dense) {dense:.4}"));
    }
    let summary = json!({
        "before_stage": stage.name(),
        "at_step": session.state.global_step,
        "indexer_params": added,
        "index_n_heads": add.n_heads,
        "index_head_dim": add.head_dim,
        "index_topk": add.topk,
        "seed": seed,
        "lm_loss_v3": before,
        "lm_loss_dense": after,
    });
    session.state.report.insert("add_indexer".to_string(), summary);
    Ok(())
}

/// The held-out text the two losses are measured on: the DSA stage's probe shape, else 8 × 64
/// tokens; none when the data has no held-out problems.
fn probe_text(session: &Session, stage: &Stage) -> Result<Option<Tensor>> {
    if session.data.held_out().is_empty() {
        return Ok(None);
    }
    let (batch, seq_len) = match stage {
        Stage::IndexerWarmup(s) => (s.batch_size, s.seq_len),
        Stage::SparseTrain(s) => (s.batch_size, s.seq_len),
        _ => (8, 64),
    };
    Ok(Some(probe_tokens(&session.policy, &session.data, batch, seq_len)?))
}
