//! The `rlvr` command line (DESIGN.md §7).

use clap::{Parser, Subcommand};

mod cmd;

/// Reinforcement learning with verifiable rewards for DeepSeek-V3.2-architecture models.
#[derive(Parser)]
#[command(name = "rlvr", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's architecture, parameter counts, stored dtypes and the device libtorch sees.
    Inspect(cmd::inspect::Args),
    /// Random-initialise a model directory in the Hugging Face layout.
    Init(cmd::init::Args),
    /// Sample completions of prompts (JSON per completion: tokens, log-probs, text, finish reason).
    Generate(cmd::generate::Args),
    /// Teacher-forced log-probabilities of token sequences under a model.
    Score(cmd::score::Args),
    /// Serve the model over an OpenAI-compatible HTTP API (completions, chat, weights, metrics).
    Serve(cmd::serve::Args),
    /// Score completions with a verifier: one verdict JSON per input line.
    Verify(cmd::verify::Args),
    /// Run a training recipe (TOML): pretrain, SFT, GRPO, DSA stages, eval.
    Train(cmd::train::Args),
    /// pass@1 / pass@k of a model on a problem file, judged by a verifier.
    Eval(cmd::eval::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => cmd::init::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Generate(args) => cmd::generate::run(args),
        Command::Score(args) => cmd::score::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Eval(args) => cmd::eval::run(args),
    };
    if let Err(err) = result {
        eprintln!("rlvr: error: {err:#}");
        std::process::exit(1);
    }
}
