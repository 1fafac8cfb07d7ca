//! Log lines on standard error: no colour codes when it is not a terminal, and one JSON object per line with `--log-format json`, in both binaries.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nodectl_e2e::harness::{self, node_fixture, nodectl_with};
use serde_json::Value;

/// The lines of `stderr` that are log lines (the command's own error line is not one).
fn log_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("nodectl: "))
        .collect()
}

fn assert_json_warning(lines: &[&str], about: &str) {
    assert!(!lines.is_empty(), "no log line");
    let mut found = false;
    for line in lines {
        let json: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"));
        assert!(
            json["timestamp"].is_string() && json["level"].is_string(),
            "{json}"
        );
        found |= json["level"] == "WARN"
            && json["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(about));
    }
    assert!(found, "no WARN about {about:?} in {lines:?}");
}

#[test]
fn nodectl_logs_plain_text_to_a_pipe_and_json_when_asked() -> anyhow::Result<()> {
    let root = node_fixture("no-gpu").display().to_string();
    // No kernel log in the tree: a warning, then the command's error.
    let plain = nodectl_with(&["--host-root", &root, "events"], &[], None)?;
    assert!(!plain.stderr.contains('\u{1b}'), "{:?}", plain.stderr);
    assert!(
        plain.stderr.contains("kernel log unavailable"),
        "{}",
        plain.stderr
    );
    let json = nodectl_with(
        &["--log-format", "json", "--host-root", &root, "events"],
        &[],
        None,
    )?;
    assert_eq!(json.code, plain.code);
    assert_json_warning(&log_lines(&json.stderr), "kernel log unavailable");
    Ok(())
}

#[test]
fn the_agent_logs_json_when_asked() -> anyhow::Result<()> {
    let mut agent = Command::new(harness::binary("nodectl-agent")?)
        .arg("--host-root")
        .arg(node_fixture("no-gpu"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = agent
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("stdout"))?;
    let ready = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line == "ready")
    });
    let waited = std::time::Instant::now();
    while !ready.is_finished() && waited.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(agent.id())?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let output = agent.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_json_warning(&log_lines(&stderr), "kernel log unavailable");
    Ok(())
}
