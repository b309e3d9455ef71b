//! The table `rlvr train` prints at the end: each stage's key figures from `report.json`.

use serde_json::Value;

/// Prints each stage's key figures.
pub fn print_table(report: &Value) {
    println!("{:<16} figures", "stage");
    let Some(stages) = report.as_object() else { return };
    for (name, s) in stages {
        let keys = [
            "accuracy",
            "kl_start",
            "kl_end",
            "recall_start",
            "recall_end",
            "lm_loss_dense",
            "lm_loss_sparse",
            "steps",
        ];
        let figures: Vec<String> =
            keys.iter().filter_map(|k| s.get(*k).and_then(Value::as_f64).map(|v| format!("{k} {v:.4}"))).collect();
        let last = s.get("last").and_then(|l| {
            let pick = ["lm_loss", "loss", "reward", "accuracy"];
            let f: Vec<String> = pick
                .iter()
                .filter_map(|k| l.get(*k).and_then(Value::as_f64).map(|v| format!("last {k} {v:.4}")))
                .collect();
            (!f.is_empty()).then(|| f.join("  "))
        });
        println!("{:<16} {}{}", name, figures.join("  "), last.map(|l| format!("  {l}")).unwrap_or_default());
    }
}
