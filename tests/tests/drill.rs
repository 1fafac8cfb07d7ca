//! `nodectl-agent inject`: a drill through the running agent's Unix socket fires the whole path on a healthy node (event, drill incident, metric, node condition, Event), each marked as a drill and cleared after; TCP callers and unknown rules are refused.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nodectl_e2e::fake_kube::DrillNode;
use nodectl_e2e::harness::{binary, http_get};
use nodectl_proto::nodectl::v1 as pb;
use pb::kernel_stream_message::Message;
use pb::node_diagnostics_client::NodeDiagnosticsClient;

const NODE: &str = "gpu-node-1";

fn inject(socket: &std::path::Path, rule: &str) -> anyhow::Result<(bool, String, String)> {
    let output = Command::new(binary("nodectl-agent")?)
        .args(["inject", "--kernel-message", rule, "--socket"])
        .arg(socket)
        .output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_fires_event_incident_metric_condition_and_event_marked_and_cleared()
-> anyhow::Result<()> {
    let node = DrillNode::start(NODE).await?;
    let (kube, socket) = (&node.kube, &node.socket);
    let agent = node
        .agent(NODE, &["--metrics-listen", "127.0.0.1:0"])
        .await?;

    // Healthy before the drill.
    let deadline = Instant::now() + Duration::from_secs(20);
    while kube.condition(NODE, "AMDGPUHealthy").is_none() {
        anyhow::ensure!(Instant::now() < deadline, "no condition set");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (ok, stdout, stderr) = inject(socket, "mes_timeout")?;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("injected as a drill") && stdout.contains("MES failed to respond"),
        "{stdout}"
    );

    // The event and its drill incident, in the agent's stream, marked.
    let mut client = NodeDiagnosticsClient::connect(agent.endpoint.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (event, incidents) = loop {
        let mut stream = client
            .stream_kernel_events(pb::StreamKernelEventsRequest {
                since_seq: 0,
                follow: false,
                classes: Vec::new(),
                include_unclassified: false,
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut event = None;
        let mut incidents = Vec::new();
        while let Some(message) = stream.message().await? {
            match message.message {
                Some(Message::Event(e)) if e.injected => event = Some(e),
                Some(Message::Incident(i)) => incidents.push(i),
                _ => {}
            }
        }
        if let Some(event) = event
            && incidents.iter().any(|i| i.closed)
        {
            break (event, incidents);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no injected event or closed incident"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(event.id.as_deref(), Some("mes_timeout"));
    assert_eq!(event.seq, 0, "an injected event has no kernel seq");
    assert!(
        incidents.iter().all(|i| i.drill),
        "every incident here is the drill's: {incidents:?}"
    );
    // One drill incident, with an id of the tracker's own run like any other.
    assert!(
        incidents
            .iter()
            .all(|i| i.incident_id == incidents[0].incident_id && i.incident_id >= 1),
        "{incidents:?}"
    );

    // The metric, counted as an event and as a drill.
    let metrics_addr = agent.listener("metrics").context("metrics listener")?;
    let body = http_get(metrics_addr, "/metrics")?;
    assert!(
        body.contains(r#"nodectl_kernel_events_injected_total{class="hang",id="mes_timeout"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"nodectl_kernel_events_total{class="hang",id="mes_timeout"} 1"#),
        "{body}"
    );

    // The node condition went False for the drill, marked, then back to True; one Event, marked.
    let deadline = Instant::now() + Duration::from_secs(20);
    let history = loop {
        let history = kube.condition_history(NODE, "AMDGPUHealthy");
        if history.len() >= 3 && history.last().is_some_and(|c| c["status"] == "True") {
            break history;
        }
        anyhow::ensure!(Instant::now() < deadline, "condition history {history:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(history[1]["status"], "False", "{history:?}");
    assert_eq!(history[1]["reason"], "MesHang", "{history:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = kube.events();
        if !events.is_empty() {
            break events;
        }
        anyhow::ensure!(Instant::now() < deadline, "no Event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(events.len(), 1, "{events:?}");
    let message = events[0]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("[drill"), "{message}");

    // Over TCP, refused whatever the caller; an unknown rule, refused with its name.
    let refused = client
        .inject_kernel_message(pb::InjectKernelMessageRequest {
            rule_id: "mes_timeout".to_owned(),
        })
        .await
        .err()
        .context("a drill over TCP was taken")?;
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("Unix socket"), "{refused:?}");
    let (ok, _, stderr) = inject(socket, "no_such_rule")?;
    assert!(!ok);
    assert!(stderr.contains("no_such_rule"), "{stderr}");
    let (ok, _, stderr) = inject(&node.dir.path().join("absent.sock"), "mes_timeout")?;
    assert!(!ok);
    assert!(stderr.contains("absent.sock"), "{stderr}");

    agent.terminate()?;
    Ok(())
}
