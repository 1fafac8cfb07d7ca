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

#[test]
fn a_malformed_endpoint_is_an_input_error_and_an_unreachable_one_names_the_cause()
-> anyhow::Result<()> {
    for endpoint in ["notaurl", "127.0.0.1:50151", "ftp://x"] {
        let run = nodectl(&["--endpoint", endpoint, "node", "show"])?;
        assert_eq!(run.code, 2, "{endpoint}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("expected http://HOST:PORT, https://HOST:PORT or unix:/path/to.sock"),
            "{endpoint}: {}",
            run.stderr
        );
    }
    let run = nodectl(&["--endpoint", "http://127.0.0.1:1", "node", "show"])?;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("refused"), "{}", run.stderr);
    Ok(())
}
