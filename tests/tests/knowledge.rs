//! The knowledge catalog from the outside: `nodectl knowledge check` on the shipped catalog and on a user's files (errors with file and line), a user's rows used by `events`, `knowledge show` and a running agent's node condition, and an agent refusing broken knowledge.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nodectl_e2e::fake_kube::DrillNode;
use nodectl_e2e::harness::{binary, fixture, node_fixture, nodectl, nodectl_json, nodectl_with};

const NODE: &str = "gpu-node-1";

fn path(relative: &str) -> anyhow::Result<String> {
    Ok(fixture(relative).to_str().context("path")?.to_owned())
}

#[test]
fn the_shipped_catalog_checks_and_a_broken_file_is_named_by_line() -> anyhow::Result<()> {
    let run = nodectl(&["knowledge", "check"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("ok: "), "{}", run.stdout);

    let broken = path("knowledge/broken")?;
    let run = nodectl(&["knowledge", "check", &broken])?;
    assert_eq!(run.code, 2, "{}", run.stdout);
    for expected in [
        "broken/broken.toml:4: known_issue `my_stall`: action `reboot_the_node` is no strategy",
        "broken/broken.toml:17: duplicate id: strategy `ask_the_vendor` is defined already at ",
        "broken/broken.toml:23: rule `my_rule`: no `example` line",
    ] {
        assert!(run.stderr.contains(expected), "{expected}\n{}", run.stderr);
    }
    // The same files given to a command that runs: refused, not half used.
    let run = nodectl(&[
        "--knowledge",
        &broken,
        "--host-root",
        node_fixture("strix-halo-healthy")
            .to_str()
            .context("path")?,
        "node",
        "check",
    ])?;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stderr.contains("broken.toml:23"), "{}", run.stderr);
    Ok(())
}

#[test]
fn a_sites_rows_are_used_by_events_and_show() -> anyhow::Result<()> {
    let site = path("knowledge/site")?;
    let run = nodectl(&["knowledge", "check", &site])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("site/psp.toml"), "{}", run.stdout);

    let log = "[ 5.0] [drm] psp gfx command LOAD_TA(0x1) failed and response status is (0x7)\n";
    let run = nodectl_with(
        &["--knowledge", &site, "events", "--file", "-", "-o", "json"],
        &[],
        Some(log),
    )?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    let event = &json["events"][0];
    assert_eq!(event["id"], "psp_command_failed", "{json}");
    assert_eq!(event["fields"]["psp_command"], "LOAD_TA", "{json}");
    // Without the site's files the line is nobody's.
    let run = nodectl_with(&["events", "--file", "-", "-o", "json"], &[], Some(log))?;
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(json["events"].as_array().map(Vec::len), Some(0), "{json}");

    // Every row naming reboot_node now says the site's words.
    let (code, shown) = nodectl_json(&[
        "--knowledge",
        &site,
        "knowledge",
        "show",
        "smu_hang",
        "-o",
        "json",
    ])?;
    assert_eq!(code, 0);
    let kind = shown
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["kind"] == "incident_kind")
        .context("smu_hang incident kind")?;
    assert_eq!(kind["what_to_do"][0]["strategy"], "reboot_node", "{kind}");
    assert!(
        kind["what_to_do"][0]["action"]
            .as_str()
            .is_some_and(|a| a.contains("runbook GPU-7")),
        "{kind}"
    );
    let (_, list) = nodectl_json(&["knowledge", "list", "--kind", "strategy", "-o", "json"])?;
    let list = list.as_array().context("list")?;
    assert!(list.iter().all(|e| e["kind"] == "strategy"));
    assert!(list.iter().any(|e| e["id"] == "cwsr_disable"));
    Ok(())
}

#[test]
fn an_agent_refuses_broken_knowledge_with_file_and_line() -> anyhow::Result<()> {
    let mut child = Command::new(binary("nodectl-agent")?)
        .arg("--host-root")
        .arg(node_fixture("strix-halo-healthy"))
        .args(["--listen", "127.0.0.1:0", "--knowledge"])
        .arg(fixture("knowledge/broken"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            child.kill()?;
            anyhow::bail!("the agent started on broken knowledge");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut stderr)?;
    assert!(!status.success());
    assert!(
        stderr.contains("broken.toml:4") && stderr.contains("broken.toml:23"),
        "{stderr}"
    );
    Ok(())
}

/// The site's rule fires in a running agent, and the site's strategy text is what the node
/// condition's incident says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_uses_the_sites_rule_and_words() -> anyhow::Result<()> {
    let node = DrillNode::start(NODE).await?;
    let (kube, socket) = (&node.kube, &node.socket);
    let site = path("knowledge/site")?;
    let _agent = node.agent(NODE, &["--knowledge", &site]).await?;
    let inject = |rule: &str| -> anyhow::Result<String> {
        let output = Command::new(binary("nodectl-agent")?)
            .args(["inject", "--kernel-message", rule, "--socket"])
            .arg(socket)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    inject("smu_hang")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let said = kube.events().iter().any(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("runbook GPU-7"))
        });
        if said {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no Event with the site's action: {:?}",
            kube.events()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The site's own rule has an example, so it can be drilled too.
    let out = inject("psp_command_failed")?;
    assert!(out.contains("psp gfx command LOAD_TA"), "{out}");
    Ok(())
}
