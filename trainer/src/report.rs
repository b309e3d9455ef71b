//! The table `rlvr train` prints at the end: each stage's key figures from `report.json`.

use serde_json::Value;

/// Prints each stage's key figures.
pub fn print_table(report: &Value) {
    println!("{:<16} figures", "stage");
    let Some(stages) = report.as_object() else { return };
    for (name, s) in stages {
        let keys = [
            "accuracy",
            "lm_loss_v3",
            "kl_start",
            "kl_end",
            "recall_start",
            "recall_end",
            "lm_loss_dense",
            "lm_loss_sparse",
            "steps",
        ];
        let figures: Vec<String> =
            keys.iter().filter_map(|k| s.get(*k).and_then(figure).map(|v| format!("{k} {v}"))).collect();
        let last = s.get("last").and_then(|l| {
            let pick = ["lm_loss", "loss", "reward", "accuracy"];
            let f: Vec<String> =
                pick.iter().filter_map(|k| l.get(*k).and_then(figure).map(|v| format!("last {k} {v}"))).collect();
            (!f.is_empty()).then(|| f.join("  "))
        });
        println!("{:<16} {}{}", name, figures.join("  "), last.map(|l| format!("  {l}")).unwrap_or_default());
    }
}

/// A number as the table shows it: integers as integers, magnitudes that four decimals would show
/// as zero in exponent form, the rest with four decimals (never `-0.0000`).
fn figure(value: &Value) -> Option<String> {
    if let Some(n) = value.as_i64() {
        return Some(n.to_string());
    }
    let v = value.as_f64()?;
    Some(if v == 0.0 {
        "0".to_string()
    } else if v.abs() < 5e-5 {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    })
}

#[cfg(test)]
mod tests {
    use super::figure;
    use serde_json::json;

    #[test]
    fn figures_read_as_numbers() {
        let shown = |v: serde_json::Value| figure(&v).unwrap();
        assert_eq!(shown(json!(30)), "30");
        assert_eq!(shown(json!(0.37)), "0.3700");
        assert_eq!(shown(json!(-0.0)), "0");
        assert_eq!(shown(json!(7.450580596923828e-9)), "7.45e-9");
        assert_eq!(shown(json!(-2e-6)), "-2.00e-6");
        assert_eq!(figure(&json!("x")), None);
    }
}
