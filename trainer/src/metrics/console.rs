//! The one console line per logged step:
//!
//! `[grpo] step 12/50 reward 0.41±0.30 acc 0.38 loss 0.012 kl 0.001 clip 0.02/0.00 len 7.1 gen 1.2s score 0.1s train 0.8s 950 tok/s`
//!
//! Only the metrics with a fixed meaning are shown, in this order, each when present; other
//! metrics reach metrics.jsonl, W&B and nothing here.
//!
//! | key | shown as | meaning |
//! |---|---|---|
//! | `reward`, `reward_std` | `reward 0.41±0.30` | mean and std of the sequence rewards |
//! | `accuracy` | `acc 0.38` | fraction of samples the verifier accepts |
//! | `loss` | `loss 0.012` | the stage's training loss |
//! | `kl` | `kl 0.001` | KL to the reference policy |
//! | `entropy` | `ent 0.51` | mean token entropy of the policy |
//! | `clip_low`, `clip_high` | `clip 0.02/0.00` | fraction of tokens clipped below / above the ratio range |
//! | `completion_len` | `len 7.1` | mean completion length, tokens |
//! | `grad_norm` | `gnorm 0.850` | gradient norm before clipping |
//! | `lr` | `lr 1.0e-6` | learning rate |
//! | `gen_s`, `score_s`, `train_s` | `gen 1.2s` ... | seconds spent generating, scoring, training |
//! | `tok_per_s` | `950 tok/s` | trained tokens per second |
//! | `servers_alive` | `servers 2` | rollout servers in the pool (service backend) |
//! | `staleness_max` | `stale 1` | most versions a trained-on token lagged the trainer |
//! | `samples_discarded` | `discarded 4` | samples dropped as too stale (when any) |
//! | `trainer_idle_s` | `idle 0.3s` | seconds the trainer waited for rollouts generated ahead |

use super::StepRecord;

/// Every metric name the console line shows, in its order.
pub const KNOWN_KEYS: [&str; 19] = [
    "reward",
    "reward_std",
    "accuracy",
    "loss",
    "kl",
    "entropy",
    "clip_low",
    "clip_high",
    "completion_len",
    "grad_norm",
    "lr",
    "gen_s",
    "score_s",
    "train_s",
    "tok_per_s",
    "servers_alive",
    "staleness_max",
    "samples_discarded",
    "trainer_idle_s",
];

/// The console line for `record`; `end_step` is the stage's last step, shown as `step N/end`.
pub fn format_line(record: &StepRecord, end_step: Option<u64>) -> String {
    let get = |key: &str| record.get(key);
    let mut line = format!("[{}] step {}", record.stage, record.step);
    if let Some(end) = end_step {
        line.push_str(&format!("/{end}"));
    }
    if let Some(reward) = get("reward") {
        line.push_str(&format!(" reward {reward:.2}"));
        if let Some(std) = get("reward_std") {
            line.push_str(&format!("±{std:.2}"));
        }
    }
    push(&mut line, "acc", get("accuracy").map(|v| format!("{v:.2}")));
    push(&mut line, "loss", get("loss").map(small));
    push(&mut line, "kl", get("kl").map(small));
    push(&mut line, "ent", get("entropy").map(|v| format!("{v:.2}")));
    let (low, high) = (get("clip_low"), get("clip_high"));
    if low.is_some() || high.is_some() {
        let part = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        line.push_str(&format!(" clip {}/{}", part(low), part(high)));
    }
    push(&mut line, "len", get("completion_len").map(|v| format!("{v:.1}")));
    push(&mut line, "gnorm", get("grad_norm").map(small));
    push(&mut line, "lr", get("lr").map(|v| format!("{v:.1e}")));
    push(&mut line, "gen", get("gen_s").map(|v| format!("{v:.1}s")));
    push(&mut line, "score", get("score_s").map(|v| format!("{v:.1}s")));
    push(&mut line, "train", get("train_s").map(|v| format!("{v:.1}s")));
    if let Some(rate) = get("tok_per_s") {
        line.push_str(&format!(" {rate:.0} tok/s"));
    }
    push(&mut line, "servers", get("servers_alive").map(|v| format!("{v:.0}")));
    push(&mut line, "stale", get("staleness_max").map(|v| format!("{v:.0}")));
    push(&mut line, "discarded", get("samples_discarded").filter(|&v| v > 0.0).map(|v| format!("{v:.0}")));
    push(&mut line, "idle", get("trainer_idle_s").map(|v| format!("{v:.1}s")));
    line
}

fn push(line: &mut String, label: &str, value: Option<String>) {
    if let Some(value) = value {
        line.push_str(&format!(" {label} {value}"));
    }
}

/// Three decimals, or two significant digits in exponent form below 0.001 so that a small loss
/// or KL does not print as 0.000.
fn small(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}
