//! Multi-process tests of the c10d binding. The parent tests re-run this test binary as the ranks of
//! a job (`--ignored --exact child_*` with `RLVR_DIST_CHILD` set, plus the launch variables), and
//! check that every rank exited 0; the ranks check the collectives' results against values worked
//! out by hand.

use rlvr_dist::{Backend, DistError, Group, Launch, ReduceOp};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// Set in a child process: which child test it runs.
const CHILD_ENV: &str = "RLVR_DIST_CHILD";
/// A folder the parent and its children share (fault test).
const SCRATCH_ENV: &str = "RLVR_DIST_SCRATCH";
/// Set by the torchrun test: the child must see torchrun's agent store.
const EXPECT_AGENT_ENV: &str = "RLVR_DIST_EXPECT_AGENT_STORE";
/// Fault test: the rank that kills itself (default 2).
const VICTIM_ENV: &str = "RLVR_DIST_VICTIM";

/// What a child prints when every collective gave the expected result.
const MATCHED: &str = "every collective matched";

const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a whole multi-process test may take before its processes are killed.
const DEADLINE: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------------
// Parent side
// ---------------------------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlvr-dist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A command for this test binary running child test `child`, without any launch variables this
/// process may have inherited.
fn child_command(child: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", child, "--nocapture", "--test-threads=1"]);
    for var in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_USE_AGENT_STORE",
        "TORCHELASTIC_RESTART_COUNT",
        EXPECT_AGENT_ENV,
        VICTIM_ENV,
    ] {
        cmd.env_remove(var);
    }
    cmd.env(CHILD_ENV, child).env("OMP_NUM_THREADS", "1");
    cmd
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Starts `cmd` in its own process group, its output going to `dir/<name>.log`.
fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let out = File::create(&log).unwrap();
    cmd.stdout(Stdio::from(out.try_clone().unwrap())).stderr(Stdio::from(out)).process_group(0);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {name}: {e}"));
    Proc { name: name.to_owned(), child, log }
}

/// Waits for every process until `deadline`, then kills the stragglers (whole process groups).
/// Returns each one's status (`None`: killed at the deadline) and log.
fn wait_all(mut procs: Vec<Proc>, deadline: Duration) -> Vec<(String, Option<ExitStatus>, String)> {
    let end = Instant::now() + deadline;
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; procs.len()];
    while Instant::now() < end && statuses.iter().any(Option::is_none) {
        for (proc, status) in procs.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = proc.child.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (proc, status) in procs.iter_mut().zip(&statuses) {
        if status.is_none() {
            // SAFETY: plain syscall on a process group this test created.
            unsafe { libc::kill(-(proc.child.id() as i32), libc::SIGKILL) };
            let _ = proc.child.wait();
        }
    }
    procs
        .into_iter()
        .zip(statuses)
        .map(|(proc, status)| (proc.name, status, std::fs::read_to_string(&proc.log).unwrap_or_default()))
        .collect()
}

fn assert_all_passed(results: &[(String, Option<ExitStatus>, String)]) {
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, status, _)| !status.is_some_and(|s| s.success()))
        .map(|(name, status, log)| match status {
            Some(status) => format!("--- {name}: {status}\n{log}"),
            None => format!("--- {name}: killed after {DEADLINE:?}\n{log}"),
        })
        .collect();
    assert!(failed.is_empty(), "ranks failed:\n{}", failed.join("\n"));
}

/// Every process passed, and `ranks` ranks in all reported a full set of matching collectives
/// (so no child passed vacuously).
fn assert_matched(results: &[(String, Option<ExitStatus>, String)], ranks: usize) {
    assert_all_passed(results);
    let matched = results.iter().map(|(_, _, log)| log.matches(MATCHED).count()).sum::<usize>();
    let logs: Vec<&str> = results.iter().map(|(_, _, log)| log.as_str()).collect();
    assert_eq!(matched, ranks, "ranks reporting success:\n{}", logs.join("\n"));
}

/// Launches `world` ranks of child test `child` the way a plain launcher would.
fn launch(child: &str, world: usize, dir: &Path, env: &[(&str, &str)]) -> Vec<(String, Option<ExitStatus>, String)> {
    let port = free_port();
    let procs = (0..world)
        .map(|rank| {
            let mut cmd = child_command(child);
            cmd.env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env(SCRATCH_ENV, dir)
                .envs(env.iter().copied());
            spawn(cmd, dir, &format!("rank{rank}"))
        })
        .collect();
    wait_all(procs, DEADLINE)
}

#[test]
fn two_ranks_run_every_collective() {
    let dir = scratch_dir("two");
    assert_matched(&launch("child_collectives", 2, &dir, &[]), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn three_ranks_run_every_collective() {
    let dir = scratch_dir("three");
    assert_matched(&launch("child_collectives", 3, &dir, &[]), 3);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn killed_rank_is_named_by_the_survivors() {
    fault_test(2);
}

/// Rank 0 hosts the store: when it dies, the survivors can read no heartbeat and say so.
#[test]
fn killed_store_host_is_named_by_the_survivors() {
    fault_test(0);
}

/// Three ranks; `victim` SIGKILLs itself after a first collective, the others must fail their next
/// one within the timeout, naming the victim.
fn fault_test(victim: usize) {
    let dir = scratch_dir(&format!("fault{victim}"));
    let started = Instant::now();
    let results = launch("child_fault", 3, &dir, &[(VICTIM_ENV, &victim.to_string())]);
    let elapsed = started.elapsed();
    let (_, dead, dead_log) = &results[victim];
    let killed = dead.map(|s| std::os::unix::process::ExitStatusExt::signal(&s) == Some(libc::SIGKILL));
    assert_eq!(killed, Some(true), "rank {victim} should have died by SIGKILL:\n{dead_log}");
    let survivors: Vec<_> = results.into_iter().enumerate().filter(|(r, _)| *r != victim).map(|(_, res)| res).collect();
    assert_all_passed(&survivors);
    for (name, _, log) in &survivors {
        assert!(log.contains(&format!("lost rank {victim}")), "{name} did not name rank {victim}:\n{log}");
        for line in log.lines().filter(|l| l.contains("lost rank") || l.contains("dropped")) {
            eprintln!("{name}: {line}");
        }
    }
    assert!(elapsed < Duration::from_secs(30), "the fault test took {elapsed:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn torchrun_with_agent_store() {
    let torchrun = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/torchrun");
    if !torchrun.exists() {
        eprintln!("note: {} not found; torchrun test skipped", torchrun.display());
        return;
    }
    let dir = scratch_dir("torchrun");
    let mut cmd = child_command("child_collectives");
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let envs: Vec<_> = cmd.get_envs().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned()))).collect();
    let mut run = Command::new(&torchrun);
    run.args(["--standalone", "--nproc-per-node", "2", "--no-python"]).arg(cmd.get_program()).args(&args);
    for (key, value) in envs {
        match value {
            Some(value) => run.env(key, value),
            None => run.env_remove(key),
        };
    }
    run.env(EXPECT_AGENT_ENV, "1").env(SCRATCH_ENV, &dir);
    cmd = run;
    let results = wait_all(vec![spawn(cmd, &dir, "torchrun")], DEADLINE);
    assert_matched(&results, 2);
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// In-process tests
// ---------------------------------------------------------------------------------------------

#[test]
fn single_group_collectives_are_identities() {
    let group = Group::single();
    assert_eq!((group.rank(), group.world(), group.local_rank(), group.is_main()), (0, 1, 0, true));
    check_identities(&group);
    assert_eq!(group.bytes_moved(), 0);
    assert!(group.broadcast(&mut Tensor::zeros([2], (Kind::Float, Device::Cpu)), 1).is_err());
}

#[test]
fn group_is_send() {
    fn send<T: Send>(_: T) {}
    send(Group::single());
}

#[test]
fn world_of_one_on_gloo() {
    let launch = local_launch(0, 1);
    let group = Group::init(&launch, Backend::Gloo, TIMEOUT).unwrap();
    assert_eq!(group.backend(), Some(Backend::Gloo));
    check_identities(&group);
}

fn check_identities(group: &Group) {
    let device = group.device();
    let values = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).to_device(device);
    for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
        let mut t = values.copy();
        group.all_reduce(&mut t, op).unwrap();
        assert_eq!(floats(&t), vec![1.0, -2.0, 3.0]);
    }
    let mut t = values.copy();
    group.broadcast(&mut t, 0).unwrap();
    assert_eq!(floats(&t), vec![1.0, -2.0, 3.0]);
    let mut out = Tensor::zeros([3], (Kind::Float, device));
    group.all_gather(&mut out, &values).unwrap();
    assert_eq!(floats(&out), vec![1.0, -2.0, 3.0]);
    let mut out = Tensor::zeros([3], (Kind::Float, device));
    group.reduce_scatter(&mut out, &values, ReduceOp::Sum).unwrap();
    assert_eq!(floats(&out), vec![1.0, -2.0, 3.0]);
    let mut out = Tensor::zeros([3], (Kind::Float, device));
    group.all_to_all(&mut out, &values, &[3], &[3]).unwrap();
    assert_eq!(floats(&out), vec![1.0, -2.0, 3.0]);
    group.barrier().unwrap();
    let mut f = [1.5, 2.5];
    group.all_reduce_f64(&mut f, ReduceOp::Sum).unwrap();
    assert_eq!(f, [1.5, 2.5]);
    assert_eq!(group.all_gather_bytes(b"abc").unwrap(), vec![b"abc".to_vec()]);
    let mut bytes = b"xyz".to_vec();
    group.broadcast_bytes(&mut bytes, 0).unwrap();
    assert_eq!(bytes, b"xyz");
}

#[test]
fn gloo_object_size_matches_libtorch() {
    let lib = libtorch_lib();
    let wheel = operator_new_size(&lib.join("libtorch_cpu.so"), "ProcessGroupGloo5split");
    assert_eq!(rlvr_dist::c10d_sizeof_gloo(), wheel, "sizeof(ProcessGroupGloo): shim vs the wheel's split()");
    if let Some(ours) = rlvr_dist::c10d_sizeof_nccl() {
        let wheel = operator_new_size(&lib.join("libtorch_cuda.so"), "ProcessGroupNCCL5split");
        assert_eq!(ours, wheel, "sizeof(ProcessGroupNCCL): shim vs the wheel's split()");
    }
}

#[test]
fn nccl_without_a_gpu_is_an_error() {
    if tch::Cuda::is_available() {
        eprintln!("note: CUDA is available here: checking a world of 1 on NCCL instead");
        let group = Group::init(&local_launch(0, 1), Backend::Nccl, TIMEOUT).unwrap();
        assert_eq!(group.device(), Device::Cuda(0));
        check_identities(&group);
        return;
    }
    let err = Group::init(&local_launch(0, 1), Backend::Nccl, TIMEOUT).unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.collective, "init");
    if rlvr_dist::nccl_built() {
        let text = err.to_string().to_lowercase();
        assert!(text.contains("gpu") || text.contains("cuda"), "{err}");
    } else {
        assert!(err.to_string().contains("no NCCL support"), "{err}");
    }
}

fn local_launch(rank: usize, world: usize) -> Launch {
    Launch {
        rank,
        world,
        local_rank: rank,
        local_world: world,
        master_addr: "127.0.0.1".into(),
        master_port: free_port(),
        agent_store: false,
        restart_count: 0,
    }
}

fn libtorch_lib() -> PathBuf {
    let libtorch = std::env::var_os("LIBTORCH").map(PathBuf::from).expect("LIBTORCH is set by .cargo/config.toml");
    let libtorch =
        if libtorch.is_relative() { Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(libtorch) } else { libtorch };
    libtorch.join("lib")
}

/// The size `lib`'s own `<class>::split` passes to `operator new` (`mov $N,%edi` right before
/// `call <_Znwm@plt>`): the size of the class as libtorch was compiled.
fn operator_new_size(lib: &Path, symbol_part: &str) -> usize {
    let nm = Command::new("nm").args(["-D", "--defined-only"]).arg(lib).output();
    let nm = nm.unwrap_or_else(|e| panic!("nm (binutils) is needed for this test: {e}"));
    let listing = String::from_utf8_lossy(&nm.stdout);
    let symbol = listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .find(|name| name.contains(symbol_part))
        .unwrap_or_else(|| panic!("no symbol containing {symbol_part} in {}", lib.display()));
    let objdump = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn", &format!("--disassemble={symbol}")])
        .arg(lib)
        .output()
        .unwrap_or_else(|e| panic!("objdump (binutils) is needed for this test: {e}"));
    let code = String::from_utf8_lossy(&objdump.stdout);
    let mut last_edi = None;
    for line in code.lines() {
        if let Some(imm) = line.split("mov    $0x").nth(1).and_then(|rest| rest.strip_suffix(",%edi")) {
            last_edi = usize::from_str_radix(imm, 16).ok();
        }
        if line.contains("call") && line.contains("<_Znwm@plt>") {
            return last_edi.unwrap_or_else(|| panic!("no size moved into %edi before operator new in {symbol}"));
        }
    }
    panic!("no call to operator new in {symbol} of {}", lib.display());
}

fn floats(t: &Tensor) -> Vec<f32> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]);
    let mut out = vec![0f32; t.numel()];
    t.copy_data(&mut out, t.numel());
    out
}

// ---------------------------------------------------------------------------------------------
// Child side: one rank of a job
// ---------------------------------------------------------------------------------------------

/// Returns false (and the test passes vacuously) outside a child process.
fn in_child(name: &str) -> bool {
    let here = std::env::var(CHILD_ENV).ok();
    if here.as_deref() != Some(name) {
        eprintln!("note: {name} runs only as a child process of the multi-process tests");
        return false;
    }
    true
}

#[test]
#[ignore = "a rank of the multi-process tests"]
fn child_collectives() {
    if !in_child("child_collectives") {
        return;
    }
    let launch = Launch::from_env().unwrap().expect("launch variables are set");
    if std::env::var_os(EXPECT_AGENT_ENV).is_some() {
        assert!(launch.agent_store, "torchrun's TORCHELASTIC_USE_AGENT_STORE was not seen");
    }
    let group = Group::from_env(Backend::Gloo, TIMEOUT).unwrap();
    let (r, w) = (group.rank(), group.world());
    assert_eq!((r, w, group.local_rank(), group.is_main()), (launch.rank, launch.world, launch.local_rank, r == 0));
    let (rf, wf) = (r as f32, w as f32);
    let sum_ranks = (w * (w - 1) / 2) as f32;

    // all_reduce: [r + 1, -r] -> sum, max, min.
    let start = Tensor::from_slice(&[rf + 1.0, -rf]);
    let mut t = start.copy();
    group.all_reduce(&mut t, ReduceOp::Sum).unwrap();
    assert_eq!(floats(&t), vec![sum_ranks + wf, -sum_ranks]);
    let mut t = start.copy();
    group.all_reduce(&mut t, ReduceOp::Max).unwrap();
    assert_eq!(floats(&t), vec![wf, 0.0]);
    let mut t = start.copy();
    group.all_reduce(&mut t, ReduceOp::Min).unwrap();
    assert_eq!(floats(&t), vec![1.0, 1.0 - wf]);
    // Integers too.
    let mut t = Tensor::from_slice(&[r as i64 * 7]);
    group.all_reduce(&mut t, ReduceOp::Sum).unwrap();
    assert_eq!(t.int64_value(&[0]), 7 * (w * (w - 1) / 2) as i64);

    // broadcast from the last rank (not 0): [10 * root, 10 * root + 1, ...].
    let root = w - 1;
    let mut t = Tensor::arange(4, (Kind::Float, Device::Cpu)) + 10.0 * r as f64;
    group.broadcast(&mut t, root).unwrap();
    let b = 10.0 * root as f32;
    assert_eq!(floats(&t), vec![b, b + 1.0, b + 2.0, b + 3.0]);

    // all_gather of a [2, 3] block full of r -> [2w, 3], rows 2k and 2k + 1 full of k.
    let input = Tensor::full([2, 3], rf as f64, (Kind::Float, Device::Cpu));
    let mut out = Tensor::zeros([2 * w as i64, 3], (Kind::Float, Device::Cpu));
    group.all_gather(&mut out, &input).unwrap();
    let expected: Vec<f32> = (0..w).flat_map(|k| vec![k as f32; 6]).collect();
    assert_eq!(floats(&out), expected);

    // reduce_scatter: input[i] = 100 r + i (2w entries); rank r keeps block r (i = 2r, 2r + 1),
    // summed over ranks: 100 * sum_ranks + w * i.
    let input = Tensor::arange(2 * w as i64, (Kind::Float, Device::Cpu)) + 100.0 * r as f64;
    let mut out = Tensor::zeros([2], (Kind::Float, Device::Cpu));
    group.reduce_scatter(&mut out, &input, ReduceOp::Sum).unwrap();
    let i0 = 2.0 * rf;
    assert_eq!(floats(&out), vec![100.0 * sum_ranks + wf * i0, 100.0 * sum_ranks + wf * (i0 + 1.0)]);
    let mut out = Tensor::zeros([2], (Kind::Float, Device::Cpu));
    group.reduce_scatter(&mut out, &input, ReduceOp::Max).unwrap();
    assert_eq!(floats(&out), vec![100.0 * (wf - 1.0) + i0, 100.0 * (wf - 1.0) + i0 + 1.0]);

    // all_to_all, uneven: rank r sends r + p + 1 rows to rank p, row k of that block holding
    // [1000 r + 10 p + k, -(1000 r + 10 p + k)].
    let in_splits: Vec<i64> = (0..w).map(|p| (r + p + 1) as i64).collect();
    let out_splits: Vec<i64> = (0..w).map(|p| (p + r + 1) as i64).collect();
    let row = |from: usize, to: usize, k: usize| (1000 * from + 10 * to + k) as f32;
    let sent: Vec<f32> = (0..w).flat_map(|p| (0..r + p + 1).flat_map(move |k| [row(r, p, k), -row(r, p, k)])).collect();
    let input = Tensor::from_slice(&sent).view([-1, 2]);
    let mut out = Tensor::zeros([out_splits.iter().sum::<i64>(), 2], (Kind::Float, Device::Cpu));
    group.all_to_all(&mut out, &input, &out_splits, &in_splits).unwrap();
    let expected: Vec<f32> =
        (0..w).flat_map(|p| (0..p + r + 1).flat_map(move |k| [row(p, r, k), -row(p, r, k)])).collect();
    assert_eq!(floats(&out), expected);

    group.barrier().unwrap();

    // Conveniences.
    let mut values = [r as f64 + 0.25, 1.0, -(r as f64)];
    group.all_reduce_f64(&mut values, ReduceOp::Sum).unwrap();
    let sr = sum_ranks as f64;
    assert_eq!(values, [sr + 0.25 * w as f64, w as f64, -sr]);
    let mut values = [r as f64];
    group.all_reduce_f64(&mut values, ReduceOp::Max).unwrap();
    assert_eq!(values, [(w - 1) as f64]);

    // Rank 0 sends nothing, rank r sends "r:" r times.
    let mine = format!("{r}:").repeat(r).into_bytes();
    let all = group.all_gather_bytes(&mine).unwrap();
    let expected: Vec<Vec<u8>> = (0..w).map(|k| format!("{k}:").repeat(k).into_bytes()).collect();
    assert_eq!(all, expected);

    let mut bytes = vec![r as u8; r + 2];
    group.broadcast_bytes(&mut bytes, root).unwrap();
    assert_eq!(bytes, vec![root as u8; root + 2]);
    let mut empty = if r == 0 { Vec::new() } else { vec![9u8; 5] };
    group.broadcast_bytes(&mut empty, 0).unwrap();
    assert!(empty.is_empty());

    assert!(group.bytes_moved() > 0);
    group.barrier().unwrap();
    eprintln!("rank {r}/{w}: {MATCHED}");
}

#[test]
#[ignore = "a rank of the multi-process tests"]
fn child_fault() {
    if !in_child("child_fault") {
        return;
    }
    let scratch = PathBuf::from(std::env::var_os(SCRATCH_ENV).expect("scratch folder"));
    let group = Group::from_env(Backend::Gloo, TIMEOUT).unwrap();
    let (r, w) = (group.rank(), group.world());
    let mut t = Tensor::from_slice(&[1.0f32]);
    group.all_reduce(&mut t, ReduceOp::Sum).unwrap();
    assert_eq!(floats(&t), vec![w as f32]);
    let victim: usize = std::env::var(VICTIM_ENV).map_or(2, |v| v.parse().unwrap());
    if r == victim {
        // SAFETY: plain syscalls; this process is meant to die here, as abruptly as possible.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        unreachable!("SIGKILL returned");
    }
    let started = Instant::now();
    let mut t = Tensor::from_slice(&[1.0f32]);
    let err: DistError = group.all_reduce(&mut t, ReduceOp::Sum).unwrap_err();
    let took = started.elapsed();
    eprintln!("rank {r} after {took:.1?}: {err}");
    assert_eq!(err.collective, "all_reduce");
    assert_eq!(err.rank, r);
    assert_eq!(err.lost, vec![victim], "{err}");
    assert!(err.to_string().contains(&format!("lost rank {victim}")), "{err}");
    if victim == 0 {
        assert!(err.message.contains("hosted by rank 0, is unreachable"), "{err}");
    }
    assert!(took < TIMEOUT + Duration::from_secs(5), "took {took:?}");
    // Survivors stay until all of them have examined their failure: one that exits early closes
    // its connections and stops its heartbeat (and rank 0 takes the store with it), so a later one
    // would rightly name it as lost too.
    std::fs::write(scratch.join(format!("done{r}")), b"").unwrap();
    let end = Instant::now() + TIMEOUT + Duration::from_secs(5);
    while !(0..w).filter(|&k| k != victim).all(|k| scratch.join(format!("done{k}")).exists()) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let dropping = Instant::now();
    drop(group);
    eprintln!("rank {r}: group dropped in {:.1?}", dropping.elapsed());
}
