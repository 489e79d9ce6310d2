//! Processes and command templates, in one place: the script driver's commands, the `[hooks]`
//! (fence, identity, restart) and the alerts' exec sinks run through the same code. A template
//! is parsed and its placeholders validated against the ones its use allows when the
//! configuration is loaded; a command runs without a shell, stdin closed (or fed from memory),
//! in its own process group, within a time limit past which the whole group is killed.
//!
//! ```text
//! template.rs  CommandTemplate (argv or a command line), its placeholders, per-argument expansion
//! group.rs     run one command in its own process group: capture, time limit, group kill
//! ```

pub(crate) mod group;
pub mod template;

pub use template::CommandTemplate;

use std::time::Duration;

/// How many stderr lines a failure's message carries.
pub(crate) const STDERR_LINES: usize = 10;

/// Run an operator's hook (fence, identity, restart, an alert's exec sink): `template` with the
/// placeholders it may use (`allowed`) and their `values`, no shell, a time limit that kills the
/// hook's whole process group. A failure is (exit code, message with the end of its stderr);
/// a hook that ran too long is 124.
pub fn run_hook(
    template: &CommandTemplate,
    allowed: &[&'static str],
    values: &[(&'static str, String)],
    timeout: Duration,
) -> Result<(), (i32, String)> {
    let argv = template
        .expand(allowed, values, &[])
        .map_err(|e| (2, format!("hook command: {e}")))?;
    let prog = argv[0].clone();
    let done =
        group::run(&argv, &[], timeout).map_err(|e| (127, format!("cannot start {prog}: {e}")))?;
    let stderr = group::last_lines(&done.stderr, STDERR_LINES);
    if done.timed_out {
        Err((
            124,
            format!("{prog} ran longer than {timeout:?} and was killed with its process group"),
        ))
    } else if done.status != 0 {
        Err((
            done.status,
            format!("{prog} exited with {}: {stderr}", done.status),
        ))
    } else {
        Ok(())
    }
}
