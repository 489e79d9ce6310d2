//! Running one command: no shell, stdin closed, stdout and stderr captured (bounded), a time
//! limit enforced by killing the command's whole process group.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Keep at most this much of each output stream (the end of it).
const CAPTURE_LIMIT: usize = 64 * 1024;
/// After the command ends, wait this long for its output pipes to close (a daemon it started
/// may hold them open forever).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// How a command ended.
pub(crate) struct Finished {
    /// Exit status; 128 + signal number when a signal ended it (as shells report).
    pub status: i32,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run `argv` with extra environment variables, waiting at most `timeout`.
pub(crate) fn run(
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> std::io::Result<Finished> {
    run_with_input(argv, env, None, timeout)
}

/// [`run`] with `input` written to the command's stdin (then closed) by a thread of its own, so
/// a command that never reads it still meets its time limit.
pub(crate) fn run_with_input(
    argv: &[String],
    env: &[(String, String)],
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> std::io::Result<Finished> {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn()?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&bytes);
        });
    }
    let stdout = capture(child.stdout.take());
    let stderr = capture(child.stderr.take());

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            kill_group(child.id());
            let _ = child.kill();
            break child.wait()?;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    };
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    Ok(Finished {
        status: code,
        timed_out,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn capture(stream: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut stream) = stream {
        thread::spawn(move || {
            let mut kept: Vec<u8> = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * CAPTURE_LIMIT {
                    kept.drain(..kept.len() - CAPTURE_LIMIT);
                }
            }
            if kept.len() > CAPTURE_LIMIT {
                kept.drain(..kept.len() - CAPTURE_LIMIT);
            }
            let _ = tx.send(kept);
        });
    }
    rx
}

fn collect(rx: mpsc::Receiver<Vec<u8>>) -> String {
    let bytes = rx.recv_timeout(PIPE_GRACE).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// SIGKILL the command's process group (it leads its own, see `process_group(0)`), so the
/// children of a `sh -c` die with it.
fn kill_group(pid: u32) {
    let group = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(group) = group {
        // ESRCH: the group is already gone, which is what we wanted.
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
}

/// The last `n` non-empty lines of a text, joined with `; `.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("; ")
}
