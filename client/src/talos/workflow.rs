//! The habits every Talos write shares: confirmation, the `--timeout` value, and waiting for a rebooting node.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Duration;

use tokio::time::Instant;

use super::api::{TalosClient, is_unreachable};
use crate::exit::Unreachable;

/// The default `--timeout` for waiting on a node.
pub const DEFAULT_TIMEOUT: &str = "15m";

/// Asks before a write. `--yes` skips the question; without a terminal on stdin the write is
/// refused (exit 2) rather than guessed.
pub fn confirm(yes: bool, question: &str) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!("refusing to change the node without confirmation: confirm with --yes");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// How waiting for a node ended.
#[derive(Debug)]
pub enum Waited {
    /// The check passed (the client is connected to the node as it is now).
    Done(TalosClient),
    /// The node went down and came back, but the check does not pass.
    BackWithoutChange(TalosClient),
    /// The node never went down and the check never passed before the timeout.
    NeverWentDown(TalosClient),
}

/// Polls the node (Version, with backoff up to 5 s) until `done` passes, or the node has gone
/// down and come back, bounded by `timeout`. Progress goes to stderr. Timing out while the node
/// is down is `Unreachable` (exit 3).
pub async fn wait_for_node<F>(
    client: &TalosClient,
    timeout: Duration,
    mut done: F,
) -> anyhow::Result<Waited>
where
    F: AsyncFnMut(&TalosClient) -> anyhow::Result<bool>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(250);
    let mut saw_down = false;
    let mut last_state = "";
    let mut last_report = start;
    let mut last_error = String::new();
    let mut current = client.clone();
    loop {
        let elapsed = start.elapsed();
        let attempt = async {
            let fresh = current.reconnect().await?;
            let version = fresh.version().await?;
            Ok::<_, anyhow::Error>((fresh, version))
        }
        .await;
        let state = match attempt {
            Ok((fresh, version)) => {
                current = fresh;
                if saw_down {
                    eprintln!(
                        "  [{:>4}s] node {} is back (Talos {version})",
                        elapsed.as_secs(),
                        current.node
                    );
                }
                if done(&current).await? {
                    return Ok(Waited::Done(current));
                }
                if saw_down {
                    return Ok(Waited::BackWithoutChange(current));
                }
                "up, waiting for it to go down for the upgrade"
            }
            Err(error) => {
                if !is_unreachable(&error) {
                    // A booting node's apid may answer before its services are ready.
                    last_error = format!("{error:#}");
                }
                saw_down = true;
                "down (rebooting)"
            }
        };
        if state != last_state || last_report.elapsed() >= Duration::from_secs(15) {
            eprintln!(
                "  [{:>4}s] node {}: {state}",
                elapsed.as_secs(),
                current.node
            );
            last_state = state;
            last_report = Instant::now();
        }
        if start.elapsed() >= timeout {
            if saw_down {
                return Err(Unreachable(format!(
                    "timed out after {}s waiting for node {} to come back{}; check its console, then run `nodectl cwsr status` (or pass a longer --timeout)",
                    timeout.as_secs(),
                    current.node,
                    if last_error.is_empty() {
                        String::new()
                    } else {
                        format!(" (last error: {last_error})")
                    }
                ))
                .into());
            }
            return Ok(Waited::NeverWentDown(current));
        }
        tokio::time::sleep(delay.min(timeout.saturating_sub(start.elapsed()))).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
