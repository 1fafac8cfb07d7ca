//! Several agents at once: 50 on loopback, some killed and one stopped; each node within its deadline, failed nodes listed, the others and their critical findings shown, and the exit code of them all.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use nodectl_e2e::harness::{Agent, node_fixture, nodectl, nodectl_json};

const AGENTS: usize = 50;

/// Half the agents serve the MES 0x83 node (a critical finding), half the healthy one.
fn start_agents() -> anyhow::Result<Vec<Agent>> {
    let healthy = node_fixture("strix-halo-healthy");
    let mes83 = node_fixture("strix-halo-mes83");
    (0..AGENTS)
        .map(|i| Agent::start(if i % 2 == 0 { &mes83 } else { &healthy }, &[]))
        .collect()
}

fn nodes_by_status<'a>(json: &'a serde_json::Value, status: &str) -> Vec<&'a serde_json::Value> {
    json["nodes"]
        .as_array()
        .map(|nodes| nodes.iter().filter(|n| n["status"] == status).collect())
        .unwrap_or_default()
}

#[test]
fn fifty_agents_with_six_failed_show_the_other_fortyfour_within_the_deadline() -> anyhow::Result<()>
{
    let mut agents = start_agents()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("endpoints");
    let mut listing = String::from("# the fleet\n\n");
    for agent in &agents {
        listing.push_str(&format!("{}  # an agent\n", agent.endpoint));
    }
    std::fs::write(&file, listing)?;
    let file = file.to_str().context("path")?;

    // Every node answers.
    let (code, json) = nodectl_json(&["--endpoints-file", file, "node", "check", "-o", "json"])?;
    assert_eq!(code, 1, "critical findings on half of them: {json:#}");
    assert_eq!(nodes_by_status(&json, "ok").len(), AGENTS, "{json:#}");
    let fleet = json["fleet"].as_array().context("fleet")?;
    assert_eq!(fleet.len(), AGENTS);
    let critical = fleet
        .iter()
        .filter(|row| row["worst_finding"] == "critical: mes_firmware_known_bad")
        .count();
    assert_eq!(critical, AGENTS / 2);
    assert_eq!(fleet[0]["gfx_targets"][0], "gfx1151");
    assert_eq!(fleet[0]["cwsr_enable"], "0");

    // Five killed (refused at once), one stopped (accepts, never answers).
    let killed: Vec<String> = agents
        .drain(0..5)
        .map(|mut agent| {
            let endpoint = agent.endpoint.clone();
            agent.kill();
            endpoint
        })
        .collect();
    let stopped = agents[0].endpoint.clone();
    let stopped_pid = nix::unistd::Pid::from_raw(i32::try_from(agents[0].pid())?);
    nix::sys::signal::kill(stopped_pid, nix::sys::signal::Signal::SIGSTOP)?;

    let deadline = Duration::from_secs(3);
    let started = Instant::now();
    let run = nodectl(&[
        "--endpoints-file",
        file,
        "--node-timeout",
        "3s",
        "node",
        "check",
        "-o",
        "json",
    ]);
    let elapsed = started.elapsed();
    let run = run?;
    let json: serde_json::Value = serde_json::from_str(&run.stdout)
        .with_context(|| format!("exit {}: {}{}", run.code, run.stdout, run.stderr))?;
    assert_eq!(
        run.code, 1,
        "live nodes' critical findings decide: {}",
        run.stderr
    );
    let failed = nodes_by_status(&json, "failed");
    let mut failed_sources: Vec<&str> =
        failed.iter().filter_map(|n| n["source"].as_str()).collect();
    failed_sources.sort_unstable();
    let mut expected: Vec<&str> = killed.iter().map(String::as_str).collect();
    expected.push(&stopped);
    expected.sort_unstable();
    assert_eq!(failed_sources, expected);
    for node in &failed {
        let error = node["error"].as_str().unwrap_or_default();
        if node["source"] == stopped.as_str() {
            assert!(error.contains("no answer within 3s"), "{error}");
        } else {
            assert!(error.contains("could not be reached"), "{error}");
        }
    }
    let ok = nodes_by_status(&json, "ok");
    assert_eq!(ok.len(), AGENTS - 6);
    let with_critical = ok
        .iter()
        .filter(|n| {
            n["snapshot"]["findings"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["severity"] == "critical"))
        })
        .count();
    assert!(
        with_critical >= 20,
        "{with_critical} live nodes with a critical finding"
    );
    // The stopped node costs its deadline and no more.
    assert!(
        elapsed < deadline + Duration::from_secs(1),
        "took {elapsed:?} for a {deadline:?} deadline"
    );

    // The table: the summary first, failed rows in it, then the failures named at the end.
    let table = nodectl(&[
        "--endpoints-file",
        file,
        "--node-timeout",
        "3s",
        "node",
        "show",
    ])?;
    assert_eq!(table.code, 4, "some nodes gave no answer: {}", table.stderr);
    let first_line = table.stdout.lines().nth(1).unwrap_or_default();
    assert!(first_line.contains("open incidents"), "{}", table.stdout);
    assert!(
        table.stdout.contains("50 nodes: 44 answered, 6 failed"),
        "{}",
        table.stdout
    );
    assert!(!table.stdout.contains('\x1b'), "no colour in a pipe");
    nix::sys::signal::kill(stopped_pid, nix::sys::signal::Signal::SIGCONT)?;
    Ok(())
}

#[test]
fn an_unreachable_agent_no_longer_hides_a_live_node_and_its_critical_finding() -> anyhow::Result<()>
{
    let live = Agent::start(&node_fixture("strix-halo-mes83"), &[])?;
    let run = nodectl(&[
        "--endpoint",
        "http://127.0.0.1:1",
        "--endpoint",
        &live.endpoint,
        "node",
        "check",
    ])?;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("mes_firmware_known_bad"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("FAILED http://127.0.0.1:1"),
        "{}",
        run.stdout
    );

    // No node answers: exit 3, each listed.
    let run = nodectl(&[
        "--endpoint",
        "http://127.0.0.1:1",
        "--endpoint",
        "http://127.0.0.1:2",
        "node",
        "check",
        "-o",
        "json",
    ])?;
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(nodes_by_status(&json, "failed").len(), 2);

    // Events and diagnose list the dead node too and still show the live one.
    let run = nodectl(&[
        "--endpoint",
        "http://127.0.0.1:1",
        "--endpoint",
        &live.endpoint,
        "diagnose",
        "-o",
        "json",
    ])?;
    let json: serde_json::Value = serde_json::from_str(&run.stdout)
        .with_context(|| format!("{}{}", run.stdout, run.stderr))?;
    assert_eq!(nodes_by_status(&json, "failed").len(), 1, "{json:#}");
    assert_eq!(nodes_by_status(&json, "ok").len(), 1, "{json:#}");
    assert_eq!(run.code, 4, "{json:#}");
    Ok(())
}

#[test]
fn an_endpoints_file_with_a_bad_line_names_the_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("endpoints");
    std::fs::write(&file, "http://127.0.0.1:1\n\n# comment\n127.0.0.1:2\n")?;
    let run = nodectl(&[
        "--endpoints-file",
        file.to_str().context("path")?,
        "node",
        "show",
    ])?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("line 4") && run.stderr.contains("add http://"),
        "{}",
        run.stderr
    );
    Ok(())
}
