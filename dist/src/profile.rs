//! An operator profiler for benchmarks (`shim/profile.cpp`): every libtorch operator call made
//! while [`profile_ops`] runs its closure is counted and timed through the dispatcher's
//! RecordFunction hooks. Calls are attributed to the outermost operator on their thread (an op that
//! calls others counts once, with its inclusive time), and [`OpProfile::all_calls`] counts every
//! level. The hooks themselves cost a few hundred nanoseconds per call, so the times say where a
//! step goes, not how long an unprofiled step takes.

use std::ffi::{c_char, c_int};
use std::sync::Mutex;

extern "C" {
    fn rlvr_profile_start() -> c_int;
    fn rlvr_profile_stop();
    fn rlvr_profile_all_calls() -> i64;
    fn rlvr_profile_report(buf: *mut c_char, cap: i64) -> i64;
}

/// One outermost operator's calls and inclusive time.
#[derive(Debug, Clone, PartialEq)]
pub struct OpStat {
    /// The operator's name, e.g. `aten::mm`.
    pub name: String,
    /// Outermost calls.
    pub calls: u64,
    /// Seconds inside those calls.
    pub seconds: f64,
}

/// What one [`profile_ops`] saw.
#[derive(Debug, Clone, PartialEq)]
pub struct OpProfile {
    /// Outermost operators, most time first.
    pub ops: Vec<OpStat>,
    /// Operator calls at every depth.
    pub all_calls: u64,
}

impl OpProfile {
    /// Outermost operator calls.
    pub fn calls(&self) -> u64 {
        self.ops.iter().map(|o| o.calls).sum()
    }

    /// Seconds inside outermost operators.
    pub fn seconds(&self) -> f64 {
        self.ops.iter().map(|o| o.seconds).sum()
    }
}

/// Serialises profiles: the hooks are process-wide.
static RUNNING: Mutex<()> = Mutex::new(());

/// Runs `f` with every operator call counted; its result and the profile.
pub fn profile_ops<T>(f: impl FnOnce() -> T) -> (T, OpProfile) {
    let _one = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the shim's profiler state is guarded by its own mutex; `RUNNING` keeps starts and
    // stops of this process paired.
    let started = unsafe { rlvr_profile_start() };
    assert_eq!(started, 0, "an operator profile is already running");
    let out = f();
    // SAFETY: as above.
    unsafe { rlvr_profile_stop() };
    (out, read())
}

/// The counts of the last profile.
fn read() -> OpProfile {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // SAFETY: the shim writes at most `buf.len()` bytes into `buf`.
        let need = unsafe { rlvr_profile_report(buf.as_mut_ptr().cast(), buf.len() as i64) } as usize;
        if need <= buf.len() {
            buf.truncate(need);
            break;
        }
        buf = vec![0; need];
    }
    let text = String::from_utf8_lossy(&buf);
    let mut ops: Vec<OpStat> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let name = f.next()?.to_string();
            let calls = f.next()?.parse().ok()?;
            let nanos: f64 = f.next()?.parse().ok()?;
            Some(OpStat { name, calls, seconds: nanos * 1e-9 })
        })
        .collect();
    ops.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then_with(|| a.name.cmp(&b.name)));
    // SAFETY: reads a counter under the shim's mutex.
    let all_calls = unsafe { rlvr_profile_all_calls() } as u64;
    OpProfile { ops, all_calls }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn counts_the_outermost_calls_of_a_known_sequence() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        let ((), p) = profile_ops(|| {
            for _ in 0..3 {
                let _ = a.matmul(&a);
            }
            let _ = &a + &a;
        });
        let calls = |name: &str| p.ops.iter().find(|o| o.name == name).map_or(0, |o| o.calls);
        assert_eq!(calls("aten::matmul"), 3, "{p:?}");
        assert_eq!(calls("aten::add"), 1, "{p:?}");
        // matmul dispatches mm underneath: counted at depth, not at the top.
        assert_eq!(calls("aten::mm"), 0, "{p:?}");
        assert!(p.all_calls > p.calls(), "{p:?}");
        // Nothing is counted once the profile has ended.
        let _ = a.matmul(&a);
        let ((), empty) = profile_ops(|| ());
        assert_eq!(empty.calls(), 0);
    }
}
