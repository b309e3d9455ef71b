//! Python specifics: finding the interpreter, pulling the program out of a completion, building
//! the assert-test script, and reading a traceback.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Interpreters tried, in order, when the default `python3` on `PATH` is unreachable for the
/// sandbox user (for instance a pyenv build under root's 0700 home).
const SYSTEM_PYTHONS: &[&str] = &["/usr/bin/python3", "/usr/local/bin/python3"];

/// The interpreter's real executable: `name` is looked up on `PATH` unless it holds a `/`, then
/// asked for `sys.executable` (this sees through shims such as pyenv's) and canonicalised.
pub(crate) fn resolve(name: &str) -> io::Result<PathBuf> {
    let found = if name.contains('/') {
        PathBuf::from(name)
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("`{name}` is not on PATH")))?
    };
    let out = Command::new(&found).args(["-c", "import sys; print(sys.executable)"]).output()?;
    let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || exe.is_empty() {
        return Err(io::Error::other(format!("{} did not report sys.executable", found.display())));
    }
    std::fs::canonicalize(exe)
}

/// Whether every directory above `exe`, and `exe` itself, is open to "other" users (the sandbox
/// runs as `nobody`). The standard library normally sits under the same top-level directory.
pub(crate) fn world_usable(exe: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let other_x = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o001 != 0);
    exe.ancestors().all(|p| other_x(p).unwrap_or(false))
}

/// The interpreter to use when the config names none: `python3` from `PATH`, or a system one when
/// that is unreachable for `nobody` and the sandbox will drop to it. Returns the path and a
/// warning when it had to substitute.
pub(crate) fn default_interpreter(will_drop_uid: bool) -> io::Result<(PathBuf, Option<String>)> {
    let first = resolve("python3");
    if let Ok(exe) = &first {
        if !will_drop_uid || world_usable(exe) {
            return Ok((exe.clone(), None));
        }
    }
    for cand in SYSTEM_PYTHONS {
        if let Ok(exe) = resolve(cand) {
            if world_usable(&exe) {
                let why = match &first {
                    Ok(p) => format!("{} is not reachable for uid 65534", p.display()),
                    Err(e) => e.to_string(),
                };
                return Ok((exe.clone(), Some(format!("using {} ({why})", exe.display()))));
            }
        }
    }
    first.map(|p| (p, None))
}

/// The program in a completion: the last fenced block tagged `python`/`py`/`python3`; else the last
/// untagged fenced block; else the whole text. A fence left open (a truncated completion) runs to
/// the end of the text. The last block is taken because models often show an example or a draft
/// first and the final program last (the convention of open-r1 and verl's code rewards).
pub fn extract_program(completion: &str) -> String {
    let mut tagged = None;
    let mut untagged = None;
    let mut rest = completion;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let line_end = after.find('\n').unwrap_or(after.len());
        let tag = after[..line_end].trim().to_ascii_lowercase();
        let body_start = (line_end + 1).min(after.len());
        let body = &after[body_start..];
        let (code, next) = match body.find("```") {
            Some(close) => (&body[..close], &body[close + 3..]),
            None => (body, ""),
        };
        match tag.as_str() {
            "python" | "py" | "python3" => tagged = Some(code),
            "" => untagged = Some(code),
            _ => {}
        }
        rest = next;
    }
    tagged.or(untagged).unwrap_or(completion).to_string()
}

/// The script for an assert-style test: program, test code, `check(entry_point)` when an entry
/// point is given, then the pass token written straight to fd 1. A program that exits early
/// (`sys.exit(0)`, `os._exit(0)`) never reaches the token, so it cannot pass by exiting.
pub(crate) fn assert_script(program: &str, tests: &str, entry_point: Option<&str>, token: &str) -> String {
    let mut s = String::with_capacity(program.len() + tests.len() + 200);
    s.push_str(program);
    s.push_str("\n\n");
    s.push_str(tests);
    s.push_str("\n\n");
    if let Some(entry) = entry_point {
        s.push_str(&format!("check({entry})\n"));
    }
    s.push_str(&format!("__import__('os').write(1, b'\\n{token}\\n')\n"));
    s
}

/// The exception class on the last line of a Python traceback, if any (`"AssertionError"`).
pub(crate) fn exception_name(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let name = last.split(':').next()?.trim();
    let ok = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '.');
    ok.then(|| name.rsplit('.').next().unwrap_or(name).to_string())
}

/// A random hex token the program cannot guess.
pub(crate) fn token() -> io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Stdout comparison for stdio cases: trailing whitespace of each line and trailing blank lines
/// are ignored (the APPS/open-r1 convention).
pub(crate) fn same_output(got: &str, want: &str) -> bool {
    fn norm(s: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = s.lines().map(str::trim_end).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }
    norm(got) == norm(want)
}
