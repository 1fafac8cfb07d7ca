//! The kernel event wire across versions, and the KFD event channel where there is none: a client generated from the previous `nodectl.v1` still streams kernel log records from the current agent, and an agent on a machine without `/dev/kfd` says the channel is unavailable and serves everything else.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nodectl_e2e::harness::{Agent, nodectl, unique_tag, write_kmsg};
use nodectl_e2e::previous_wire as previous;
use nodectl_proto::nodectl::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_the_previous_wire_streams_kernel_events_from_this_agent() -> anyhow::Result<()>
{
    let agent = Agent::start(Path::new("/"), &["--full-kernel-log"])?;
    let tag = unique_tag("previous-wire");
    write_kmsg(&tag)?;
    let mut client =
        previous::node_diagnostics_client::NodeDiagnosticsClient::connect(agent.endpoint.clone())
            .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (header, event) = loop {
        let mut stream = client
            .stream_kernel_events(previous::StreamKernelEventsRequest {
                since_seq: 0,
                follow: false,
                classes: Vec::new(),
                include_unclassified: true,
            })
            .await?
            .into_inner();
        let mut header = None;
        let mut tagged = None;
        while let Some(message) = stream.message().await? {
            match message.message.context("empty message")? {
                previous::kernel_stream_message::Message::Header(h) => header = Some(h),
                previous::kernel_stream_message::Message::Event(e) if e.message.contains(&tag) => {
                    tagged = Some(e);
                }
                _ => {}
            }
        }
        if let (Some(header), Some(event)) = (header.clone(), tagged) {
            break (header, event);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{tag} never reached the old client"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!header.boot_id.is_empty());
    assert!(event.seq > 0 && event.seq >= header.first_seq && event.seq <= header.last_seq);
    assert!(event.user_written);

    // Resumed after that record, it gets nothing of it again, and no KFD record ever (it asked
    // for no source, so it gets the kernel log alone, as it always did).
    let mut stream = client
        .stream_kernel_events(previous::StreamKernelEventsRequest {
            since_seq: event.seq,
            follow: false,
            classes: Vec::new(),
            include_unclassified: true,
        })
        .await?
        .into_inner();
    while let Some(message) = stream.message().await? {
        if let Some(previous::kernel_stream_message::Message::Event(e)) = message.message {
            assert!(e.seq > event.seq, "{e:?}");
            assert!(!e.message.contains(&tag));
        }
    }
    assert!(agent.terminate()?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dev_kfd_the_channel_is_unavailable_and_the_rest_works() -> anyhow::Result<()> {
    anyhow::ensure!(
        !Path::new("/dev/kfd").exists(),
        "this test is for a machine without /dev/kfd"
    );
    let agent = Agent::start(Path::new("/"), &["--metrics-listen", "127.0.0.1:0"])?;
    // The exporter says so too, for an alert on a node whose pod lost the device.
    let metrics = agent.listener("metrics").context("metrics listener")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nodectl_e2e::harness::http_get(metrics, "/metrics")?
        .contains("nodectl_event_source_up{source=\"kfd_smi\"} 0")
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no nodectl_event_source_up for kfd_smi"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client =
        pb::node_diagnostics_client::NodeDiagnosticsClient::connect(agent.endpoint.clone()).await?;
    // The stream header says the channel is not read, and why; the kernel log streams.
    let mut stream = client
        .stream_kernel_events(pb::StreamKernelEventsRequest {
            sources: vec!["kmsg".into(), "kfd_smi".into()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let Some(pb::kernel_stream_message::Message::Header(header)) =
        stream.message().await?.and_then(|m| m.message)
    else {
        anyhow::bail!("no header first");
    };
    let status = |name: &str| header.sources.iter().find(|s| s.source == name).cloned();
    assert!(status("kmsg").context("kmsg status")?.available);
    let kfd = status("kfd_smi").context("kfd_smi status")?;
    assert!(!kfd.available);
    assert!(!kfd.reason.is_empty(), "{kfd:?}");

    // One line in the snapshot's problems; the snapshot is whole otherwise.
    let run = nodectl(&["--endpoint", &agent.endpoint, "node", "show", "-o", "json"])?;
    anyhow::ensure!(run.code == 0, "exit {}: {}", run.code, run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    let problems = json["problems"].as_array().context("problems")?;
    let kfd_lines: Vec<&serde_json::Value> = problems
        .iter()
        .filter(|p| p["path"] == "/dev/kfd")
        .collect();
    assert_eq!(kfd_lines.len(), 1, "{problems:?}");
    assert!(
        kfd_lines[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("KFD event channel unavailable")),
        "{kfd_lines:?}"
    );
    assert!(json["host"].is_object(), "{json}");
    assert!(agent.terminate()?);
    Ok(())
}
