//! The agent starts on loopback, answers a snapshot, and stops cleanly on SIGTERM.

use nodectl_e2e::harness::{Agent, nodectl};

#[test]
fn agent_serves_this_machine_and_stops_on_sigterm() -> anyhow::Result<()> {
    let agent = Agent::start(std::path::Path::new("/"), &[])?;
    let run = nodectl(&["--endpoint", &agent.endpoint, "node", "show", "-o", "json"])?;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert!(
        json["host"]["kernel_release"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );
    assert!(agent.terminate()?, "agent exits 0 on SIGTERM");
    Ok(())
}

#[test]
fn unreachable_agent_exits_3() -> anyhow::Result<()> {
    let run = nodectl(&["--endpoint", "http://127.0.0.1:1", "node", "show"])?;
    assert_eq!(run.code, 3, "stderr: {}", run.stderr);
    Ok(())
}
