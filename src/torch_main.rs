//! `rlvr-torch`: every `rlvr` command, with libtorch (docs/architecture.md §7). The `rlvr`
//! launcher (src/main.rs) runs `verify` itself and execs this binary, which sits beside it, for
//! everything else.

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
    /// Convert a checkpoint: `--add-indexer` turns a deepseek_v3 model into a deepseek_v32 one.
    Convert(cmd::convert::Args),
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
    /// A recipe's memory per device, phase by phase, before any work.
    Plan(cmd::plan::Args),
    /// pass@1 / pass@k of a model on a problem file, judged by a verifier.
    Eval(cmd::eval::Args),
}

fn main() {
    let cli = Cli::parse();
    if runs_engine(&cli.command) {
        rerun_with_passive_openmp();
        keep_freed_memory();
    }
    let result = match cli.command {
        Command::Init(args) => cmd::init::run(args),
        Command::Convert(args) => cmd::convert::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Generate(args) => cmd::generate::run(args),
        Command::Score(args) => cmd::score::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Plan(args) => cmd::plan::run(args),
        Command::Eval(args) => cmd::eval::run(args),
    };
    if let Err(err) = result {
        eprintln!("rlvr: error: {err:#}");
        std::process::exit(1);
    }
}

/// Commands that run the generation engine, whose few-row matrix kernel runs threads of its own
/// beside libtorch's OpenMP pool (`rlvr_model::kernel`).
fn runs_engine(command: &Command) -> bool {
    matches!(command, Command::Generate(_) | Command::Serve(_) | Command::Train(_) | Command::Eval(_))
}

/// The largest block glibc's allocator serves from its heap when set in-process (the most
/// `mallopt` takes: 32 MiB on 64-bit); larger ones get their own `mmap`.
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// The threshold an engine command starts with (`MALLOC_MMAP_THRESHOLD_`, which glibc reads at
/// start-up and takes above `mallopt`'s cap): 256 MiB, set by the `rlvr` launcher and by this
/// binary's re-run.
const ENGINE_MMAP_THRESHOLD: &str = "268435456";

/// Tells glibc's allocator to keep the memory a step frees for the next step instead of handing
/// it back to the kernel; each setting only where its `MALLOC_*` variable is unset (glibc has
/// already read those).
///
/// libtorch allocates every tensor through `malloc`. By default glibc serves blocks above a
/// threshold that starts at 128 KiB with a fresh `mmap`, unmapped on free, trims the heap top
/// past twice that threshold, and gives threads their own arenas; so each training step faulted
/// much of its working set in again, page by page, the kernel zeroing every page. Here blocks up
/// to [`ENGINE_MMAP_THRESHOLD`] (or [`MMAP_THRESHOLD`] when the process started without it) come
/// from one heap that is never trimmed. 256 MiB holds a GRPO step's logits and their gradients on
/// the benchmark models: four GRPO steps on the `small` preset took 9 s of system time instead of
/// 28 s at 32 MiB, the first update 3.1 s instead of 7.4 s (64 MiB was hardly better than 32).
/// Not further: serving every block from the heap (`MALLOC_MMAP_MAX_=0`) fragments it — a
/// 4K-token sparse step's peak grew by a third — which a run sized by `rlvr plan` cannot afford;
/// at 256 MiB that peak grows by 9 % (4.3 → 4.7 GiB), still what the plan predicts
/// (tests/plan_cli.rs). A user with memory to spare can set
/// either. The cost of these settings: a process keeps its peak heap until it exits, which a
/// trainer or an engine reaches every step anyway.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (variable, param, value) in [
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, libc::c_int::MAX),
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 1),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mallopt only changes the allocator's tunables; no memory is touched.
            unsafe { libc::mallopt(param, value) };
        }
    }
}

/// How long an idle OpenMP worker spins before it sleeps, in libgomp's spin iterations: a few tens
/// of microseconds, enough to catch the next op of a decode step without a futex wake.
const ENGINE_SPINCOUNT: &str = "30000";

/// Re-runs this process with `OMP_WAIT_POLICY=PASSIVE` and `GOMP_SPINCOUNT=30000` when the policy
/// is unset.
///
/// By default an OpenMP worker spins for milliseconds after each parallel region; a decode step
/// runs thousands of small ops, so libtorch's workers hold every core almost all the time and the
/// kernel's threads have to fight them for it (measured: the `small` preset's batch-16 decode took
/// ~1.5× as long). Fully passive workers cost the other way: every threaded op then wakes a
/// sleeping thread (tens of microseconds), which at batch 1 was about half of a decode step. A short
/// spin ([`ENGINE_SPINCOUNT`]; libgomp takes an explicit `GOMP_SPINCOUNT` over the policy's) keeps
/// the worker awake between the ops of a step and asleep while the kernel runs: 1.15–2× faster
/// decode than passive on the benchmark configs (benches/generate/README.md). libgomp reads both
/// once, when it is loaded before `main`, so they cannot be changed in-process. A policy or spin
/// count the user set is kept.
fn rerun_with_passive_openmp() {
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let Ok(exe) = std::env::current_exe() else { return };
        let args = std::env::args_os().skip(1);
        let mut command = std::process::Command::new(exe);
        command.args(args).env("OMP_WAIT_POLICY", "PASSIVE");
        if std::env::var_os("GOMP_SPINCOUNT").is_none() {
            command.env("GOMP_SPINCOUNT", ENGINE_SPINCOUNT);
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            command.env("MALLOC_MMAP_THRESHOLD_", ENGINE_MMAP_THRESHOLD);
        }
        let err = command.exec();
        eprintln!("rlvr: warning: could not re-run with OMP_WAIT_POLICY=PASSIVE ({err}); going on without");
    }
}
