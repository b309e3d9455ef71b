//! Prints what the code sandbox enforces on this machine (the probe's report) as JSON.
//!
//! `cargo run -p rlvr-verifiers --example sandbox_report`

use rlvr_verifiers::{CodeConfig, CodeVerifier};

fn main() -> anyhow::Result<()> {
    let verifier = CodeVerifier::new(CodeConfig::default())?;
    println!("{}", serde_json::to_string_pretty(verifier.report())?);
    println!("active: {}", verifier.report().summary());
    Ok(())
}
