//! Batch scoring on rayon with a bound on how many checks run at once.

use crate::{Task, Verdict, Verifier};
use rayon::prelude::*;

/// Scores every `(task, completion)` pair with at most `max_parallel` checks in flight. A verifier
/// error becomes that item's `Error`/`Timeout`/`Malformed` verdict; the batch always completes and
/// keeps the input order.
pub fn score_batch(verifier: &dyn Verifier, items: &[(Task, String)], max_parallel: usize) -> Vec<Verdict> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(max_parallel.max(1))
        .thread_name(|i| format!("verify-{i}"))
        .build()
        .expect("building a rayon pool only fails when threads cannot be spawned");
    pool.install(|| {
        items
            .par_iter()
            .map(|(task, completion)| verifier.verify(task, completion).unwrap_or_else(|e| Verdict::from_error(&e)))
            .collect()
    })
}
