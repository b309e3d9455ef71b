//! Hostile programs: each must score 0 within the timeout plus 2 s, leave no process behind, and
//! leave the test process, its environment, its files and its sockets untouched.

use rlvr_verifiers::{CodeConfig, CodeTests, CodeVerifier, Outcome, StdioCase, Task, Verdict, Verifier};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TIMEOUT_S: f64 = 2.0;

fn verifier() -> CodeVerifier {
    CodeVerifier::new(CodeConfig { timeout_s: TIMEOUT_S, ..CodeConfig::default() }).expect("python3 runs")
}

fn expecting(output: &str) -> Task {
    let stdio = vec![StdioCase { input: String::new(), output: output.into() }];
    Task { tests: Some(CodeTests { stdio, ..CodeTests::default() }), ..Task::default() }
}

/// A unique marker, put into the program's command line so that its processes can be found.
fn marker(name: &str) -> String {
    format!("rlvr-adv-{name}-{}-{:?}", std::process::id(), Instant::now())
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
}

/// `body`, preceded by a re-exec that appends the marker to the command line.
fn marked(marker: &str, body: &str) -> String {
    format!(
        "import os, sys\nif {marker:?} not in sys.argv:\n    os.execv(sys.executable, [sys.executable, '-I', '-B', 'solution.py', {marker:?}])\n{body}"
    )
}

fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(marker) {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found
}

/// Runs `program`, checks the verdict's reward, time, and that no marked process survives.
/// Hostile runs take turns, so that one's CPU burn does not slow another past its time bound.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run_hostile(name: &str, body: &str, task: &Task, outcomes: &[Outcome]) -> Verdict {
    let mark = marker(name);
    let verifier = verifier();
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let start = Instant::now();
    let v = verifier.verify(task, &marked(&mark, body)).unwrap();
    let took = start.elapsed();
    assert_eq!(v.reward, 0.0, "{name}: {}", v.detail);
    assert!(outcomes.contains(&v.outcome), "{name}: outcome {:?}, {}", v.outcome, v.detail);
    assert!(took < Duration::from_secs_f64(TIMEOUT_S + 2.0), "{name}: took {took:?}");
    let deadline = Instant::now() + Duration::from_millis(500);
    while !processes_with(&mark).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(processes_with(&mark), Vec::<String>::new(), "{name}: processes left behind");
    v
}

#[test]
fn infinite_loop_times_out() {
    run_hostile("loop", "while True:\n    pass\n", &expecting("x"), &[Outcome::Timeout]);
}

#[test]
fn fork_bomb_is_contained() {
    let body = "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n";
    run_hostile("forkbomb", body, &expecting("x"), &[Outcome::Timeout, Outcome::Crashed]);
}

#[test]
fn memory_bomb_fails() {
    // Containment only: reward 0, a failing outcome, a verdict within the deadline and nothing
    // left behind (all checked by `run_hostile`). Whether the address-space limit (`MemoryError`)
    // or the wall clock (`timeout`) stops the bomb first depends on how fast and how busy the
    // machine is, so either verdict is accepted.
    let body = "chunks = []\nwhile True:\n    chunks.append(bytearray(64 << 20))\n";
    run_hostile("membomb", body, &expecting("x"), &[Outcome::Crashed, Outcome::Timeout]);
}

#[test]
fn a_gigabyte_of_output_is_cut_off() {
    let body = "chunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n";
    let v = run_hostile("flood", body, &expecting("x"), &[Outcome::Crashed]);
    assert_eq!(v.detail["cases"][0]["status"], "output_limit");
}

#[test]
fn writing_outside_the_temp_dir_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let v = verifier();
    if v.report().layers.landlock {
        // Open the directory to everyone so that only Landlock stands in the way.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let target = outside.path().join("escaped.txt");
    let body = format!("open({:?}, 'w').write('pwned')\nprint('wrote')\n", target.to_str().unwrap());
    run_hostile("write", &body, &expecting("wrote"), &[Outcome::Crashed]);
    assert!(!target.exists(), "the program wrote {}", target.display());
}

#[test]
fn the_parent_environment_is_invisible() {
    let secret = format!("s3cret-{}", std::process::id());
    std::env::set_var("RLVR_TEST_SECRET", &secret);
    // Prints the secret if it finds it anywhere it can look; the case expects the secret, so a
    // leak would score 1.
    let body = format!(
        "found = [v for v in os.environ.values() if {secret:?} in v]\n\
         for pid in [p for p in os.listdir('/proc') if p.isdigit()] + ['{}']:\n\
         \x20   try:\n\
         \x20       if {secret:?}.encode() in open('/proc/' + pid + '/environ', 'rb').read():\n\
         \x20           found.append(pid)\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         print({secret:?} if found else 'nothing')\n",
        std::process::id()
    );
    let v = run_hostile("env", &body, &expecting(&secret), &[Outcome::Incorrect]);
    assert!(v.detail["cases"][0]["status"] == "failed");
}

#[test]
fn loopback_tcp_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'leak')\nprint('sent')\n"
    );
    run_hostile("tcp", &body, &expecting("sent"), &[Outcome::Crashed]);
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the listener received a connection: {accepted:?}"
    );
}

#[test]
fn a_daemonised_child_does_not_outlive_the_run() {
    let mark = marker("daemon-child");
    let body = format!(
        "if os.fork() == 0:\n\
         \x20   os.setsid()\n\
         \x20   if os.fork() == 0:\n\
         \x20       os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', {mark:?}])\n\
         \x20   os._exit(0)\n\
         import time\ntime.sleep(0.3)\nprint('done')\n"
    );
    run_hostile("daemon", &body, &expecting("not done"), &[Outcome::Incorrect]);
    assert_eq!(processes_with(&mark), Vec::<String>::new(), "the daemon survived");
}

#[test]
fn killing_the_parent_fails() {
    let me = std::process::id();
    let body = format!(
        "import signal\n\
         for pid in ({me}, os.getppid(), -1):\n\
         \x20   try:\n\
         \x20       os.kill(pid, signal.SIGKILL)\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         print('alive')\n"
    );
    // Whether the program dies by its own kill(-1) or prints, it does not print the expected text.
    run_hostile("kill", &body, &expecting("parent killed"), &[Outcome::Incorrect, Outcome::Timeout, Outcome::Crashed]);
    assert_eq!(std::process::id(), me, "this process is still running the test");
}
