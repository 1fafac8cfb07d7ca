//! Pod logs read by the agent against what a hostile writer of `/var/log/pods` or a hostile client can do: planted links, FIFOs, a stuck file system, and readers that never read.

#![allow(clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use nodectl_e2e::harness::{Agent, http_get, nodectl};
use nodectl_e2e::slow_reader::SlowReader;
use nodectl_proto::nodectl::v1 as pb;
use pb::node_diagnostics_client::NodeDiagnosticsClient;

/// Agent memory stays under this through every case (it idles near 10 MiB).
const RSS_BOUND_BYTES: u64 = 64 * 1024 * 1024;
const SERVICE: &str = "nodectl.v1.NodeDiagnostics";
const UID: &str = "0d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11";
/// What the planted links point at; it must never appear in any reply.
const SECRET: &str = "root:$6$planted-secret-hash:19000:0:99999:7:::";

/// A host root (with `proc/`, so it is one) and its `var/log/pods`.
fn host() -> anyhow::Result<(tempfile::TempDir, std::path::PathBuf)> {
    let tree = tempfile::tempdir()?;
    std::fs::create_dir_all(tree.path().join("root/proc"))?;
    let pods = tree.path().join("root/var/log/pods");
    std::fs::create_dir_all(&pods)?;
    Ok((tree, pods))
}

fn container_dir(pods: &Path, pod: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = pods.join(format!("llm_{pod}_{UID}/server"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn request(pod: &str) -> pb::TailPodLogRequest {
    pb::TailPodLogRequest {
        namespace: "llm".to_owned(),
        pod: pod.to_owned(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_planted_under_var_log_pods_are_refused_and_their_targets_never_sent()
-> anyhow::Result<()> {
    let (tree, pods) = host()?;
    // Outside the host root, as /etc/shadow is outside /var/log/pods.
    let secret = tree.path().join("shadow");
    std::fs::write(&secret, format!("{SECRET}\n"))?;
    let outside = tree.path().join("elsewhere/server");
    std::fs::create_dir_all(&outside)?;
    std::fs::write(outside.join("0.log"), format!("{SECRET}\n"))?;

    // The log file as an absolute link, as a relative one climbing out, and as a link to the
    // agent's own environment.
    std::os::unix::fs::symlink(&secret, container_dir(&pods, "absolute")?.join("0.log"))?;
    std::os::unix::fs::symlink(
        "../../../../../shadow",
        container_dir(&pods, "relative")?.join("0.log"),
    )?;
    std::os::unix::fs::symlink(
        "/proc/self/environ",
        container_dir(&pods, "environ")?.join("0.log"),
    )?;
    // A linked container directory, and a linked pod directory.
    let pod_dir = pods.join(format!("llm_container_{UID}"));
    std::fs::create_dir_all(&pod_dir)?;
    std::os::unix::fs::symlink(&outside, pod_dir.join("server"))?;
    std::os::unix::fs::symlink(
        tree.path().join("elsewhere"),
        pods.join(format!("llm_poddir_{UID}")),
    )?;
    // A real log beside them still reads.
    std::fs::write(
        container_dir(&pods, "real")?.join("0.log"),
        "2026-12-01T14:30:00Z stderr F main: server is listening on http://0.0.0.0:8080\n",
    )?;

    let root = tree.path().join("root");
    let agent = Agent::start(&root, &[])?;
    let mut client = NodeDiagnosticsClient::connect(agent.endpoint.clone()).await?;
    let cases = [
        ("absolute", "server/0.log"),
        ("relative", "server/0.log"),
        ("environ", "server/0.log"),
        ("container", "/server"),
        ("poddir", "llm_poddir_"),
    ];
    for (pod, named) in cases {
        let status = client
            .tail_pod_log(request(pod))
            .await
            .expect_err("a planted link was followed");
        assert_eq!(
            status.code(),
            tonic::Code::FailedPrecondition,
            "{pod}: {status}"
        );
        let message = status.message();
        assert!(message.contains("symbolic link"), "{pod}: {message}");
        assert!(message.contains(named), "{pod}: {message}");
        assert!(!message.contains("planted-secret"), "{pod}: {message}");
        assert!(!message.contains("PATH="), "{pod}: {message}");
    }
    let real = client.tail_pod_log(request("real")).await?.into_inner();
    assert!(String::from_utf8_lossy(&real.tail).contains("server is listening"));

    // Through the client, over the agent and in-process: an error naming the link, and nothing
    // of its target in any output.
    let root_arg = root.to_str().context("path")?;
    for (pod, _) in cases {
        let target = format!("llm/{pod}");
        for source in [
            ["--endpoint", agent.endpoint.as_str()],
            ["--host-root", root_arg],
        ] {
            for format in ["json", "table"] {
                let run = nodectl(&[
                    source[0], source[1], "diagnose", "--pod", &target, "-o", format,
                ])?;
                let all = format!("{}{}", run.stdout, run.stderr);
                assert_ne!(run.code, 0, "{pod}: {all}");
                assert!(all.contains("symbolic link"), "{pod} {source:?}: {all}");
                assert!(!all.contains("planted-secret"), "{pod} {source:?}: {all}");
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_a_pod_log_is_refused_at_once_and_snapshots_go_on() -> anyhow::Result<()> {
    let (tree, pods) = host()?;
    // No writer ever opens it: a blocking open() would never return.
    nix::unistd::mkfifo(
        &container_dir(&pods, "fifo")?.join("0.log"),
        nix::sys::stat::Mode::S_IRWXU,
    )?;
    let root = tree.path().join("root");
    let agent = Agent::start(&root, &[])?;
    let client = NodeDiagnosticsClient::connect(agent.endpoint.clone()).await?;

    // One request first: the connection then knows the agent's limit of concurrent streams,
    // and queues the rest instead of opening streams the agent must refuse.
    let first = client
        .clone()
        .tail_pod_log(request("fifo"))
        .await
        .expect_err("a FIFO was read as a log");
    assert_eq!(first.code(), tonic::Code::FailedPrecondition, "{first}");
    // 600 requests at once (512 used to take every blocking thread, and node show hung).
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..600 {
        let mut client = client.clone();
        requests.spawn(async move { client.tail_pod_log(request("fifo")).await });
    }
    let (mut refused_as_fifo, mut busy) = (0, 0);
    while let Some(done) = requests.join_next().await {
        let status = done?.expect_err("a FIFO was read as a log");
        match status.code() {
            tonic::Code::FailedPrecondition => {
                assert!(status.message().contains("a FIFO"), "{status}");
                refused_as_fifo += 1;
            }
            // Past the reads in flight: refused at once rather than queued.
            tonic::Code::ResourceExhausted => busy += 1,
            other => panic!("{other:?}: {status}"),
        }
    }
    assert!(
        refused_as_fifo > 0,
        "{refused_as_fifo} refused, {busy} busy"
    );
    let threads = agent.threads()?;
    assert!(threads < 64, "{threads} threads after 600 pod-log requests");

    // Snapshots and health answer; a hang here fails the test rather than the run.
    let mut client = client.clone();
    let snapshot = tokio::time::timeout(
        Duration::from_secs(20),
        client.get_snapshot(pb::GetSnapshotRequest::default()),
    )
    .await
    .context("a snapshot did not answer after the FIFO requests")??;
    assert!(snapshot.into_inner().host.is_some());
    assert_eq!(
        nodectl_e2e::harness::health(&agent.endpoint, SERVICE).await?,
        tonic_health::ServingStatus::Serving as i32
    );

    // In-process, `diagnose --pod` on it ends with the refusal.
    let run = tokio::task::spawn_blocking(move || {
        nodectl(&[
            "--host-root",
            root.to_str().unwrap_or_default(),
            "diagnose",
            "--pod",
            "llm/fifo",
        ])
    })
    .await??;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("a FIFO"), "{}", run.stderr);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_log_whose_reads_never_return_shows_in_readiness_and_metrics_and_snapshots_go_on()
-> anyhow::Result<()> {
    use nodectl_e2e::stalled_file::StalledFile;
    use tonic_health::ServingStatus;
    if !Path::new("/dev/fuse").exists() {
        nodectl_e2e::harness::outside_program_missing("FUSE (/dev/fuse)");
        return Ok(());
    }
    let (tree, pods) = host()?;
    let log = container_dir(&pods, "stuck")?.join("0.log");
    std::fs::write(
        &log,
        "2026-12-01T14:30:00Z stderr F load_tensors: loading model\n",
    )?;
    let root = tree.path().join("root");
    let agent = Agent::start(&root, &["--metrics-listen", "127.0.0.1:0"])?;
    let metrics_addr = agent.listener("metrics").context("metrics")?.to_owned();
    let stalled = StalledFile::mount_over(&log)?;
    let mut client = NodeDiagnosticsClient::connect(agent.endpoint.clone()).await?;

    let status = client
        .tail_pod_log(request("stuck"))
        .await
        .expect_err("a stuck read answered");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status}");
    assert!(
        status.message().contains("/var/log/pods may be stuck"),
        "{status}"
    );
    assert_eq!(
        nodectl_e2e::harness::health(&agent.endpoint, SERVICE).await?,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        nodectl_e2e::harness::health(&agent.endpoint, "").await?,
        ServingStatus::Serving as i32
    );
    let metrics = http_get(&metrics_addr, "/metrics")?;
    assert!(
        metrics.contains("\nnodectl_pod_log_reads_stuck 1\n"),
        "{metrics}"
    );
    // Many more requests: refused at once (the same log is not read again), and the stuck
    // read took none of the threads snapshots read the host with.
    for _ in 0..50 {
        let status = client
            .tail_pod_log(request("stuck"))
            .await
            .expect_err("answered");
        assert!(
            matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
            ),
            "{status}"
        );
    }
    assert_eq!(stalled.reads_started(), 1, "the stuck log was read again");
    let snapshot = tokio::time::timeout(
        Duration::from_secs(20),
        client.get_snapshot(pb::GetSnapshotRequest::default()),
    )
    .await
    .context("a snapshot did not answer while a pod-log read was stuck")??;
    assert!(snapshot.into_inner().host.is_some());

    // In-process, `diagnose --pod` on the same log returns once its deadline has passed,
    // saying why, although its read stays stuck until the file system answers.
    let output = tree.path().join("diagnose.out");
    let mut diagnose = std::process::Command::new(nodectl_e2e::harness::binary("nodectl")?)
        .args(["--host-root", root.to_str().context("path")?])
        .args(["diagnose", "--pod", "llm/stuck"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&output)?)
        .spawn()?;
    let diagnose_pid = diagnose.id();
    let ended = tokio::task::spawn_blocking(move || {
        nodectl_e2e::harness::main_thread_ends_within(diagnose_pid, Duration::from_secs(60))
    })
    .await?;
    let said = std::fs::read_to_string(&output)?;

    // The file system answers again: readiness and the log come back.
    stalled.release();
    anyhow::ensure!(
        nodectl_e2e::harness::serving_within(&agent.endpoint, SERVICE, Duration::from_secs(30))
            .await,
        "readiness stayed NOT_SERVING"
    );
    // Asserted once released, so that a failure leaves no process behind.
    assert!(ended, "the in-process diagnose --pod did not end");
    assert!(!diagnose.wait()?.success());
    assert!(said.contains("/var/log/pods may be stuck"), "{said}");
    let metrics = http_get(&metrics_addr, "/metrics")?;
    assert!(
        metrics.contains("\nnodectl_pod_log_reads_stuck 0\n"),
        "{metrics}"
    );
    drop(stalled);
    let log = client.tail_pod_log(request("stuck")).await?.into_inner();
    assert!(String::from_utf8_lossy(&log.tail).contains("loading model"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_of_a_large_pod_log_keep_the_agent_small_during_and_after()
-> anyhow::Result<()> {
    let (tree, pods) = host()?;
    // 4 MiB of request lines, the most a reply carries.
    let line = "2026-12-01T14:30:00.000000000Z stderr F srv  log_server_r: request: POST /completion 127.0.0.1 200\n";
    let log = line.repeat((4 << 20) / line.len() + 1);
    std::fs::write(container_dir(&pods, "busy")?.join("0.log"), &log)?;
    let root = tree.path().join("root");
    let agent = Agent::start(&root, &["--metrics-listen", "127.0.0.1:0"])?;
    let metrics_addr = agent.listener("metrics").context("metrics")?.to_owned();
    let addr = agent
        .endpoint
        .strip_prefix("http://")
        .context("endpoint")?
        .to_owned();
    let mut readers = Vec::new();
    for _ in 0..150 {
        readers.push(SlowReader::start(&addr, &request("busy")).await?);
    }
    let refused = readers.iter().filter(|r| r.refused).count();
    // Let the agent send what the windows allow and settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = agent.peak_rss_bytes()?;
    let held_metric = http_get(&metrics_addr, "/metrics")?;
    assert!(
        peak < RSS_BOUND_BYTES,
        "the agent peaked at {} MiB under 150 slow readers",
        peak >> 20
    );
    assert!(
        refused > 0 && refused < 150,
        "{refused} of 150 refused: the budget should admit a few and refuse the rest"
    );
    assert!(
        held_metric.contains("\nnodectl_pod_log_reply_bytes_held "),
        "{held_metric}"
    );

    // They leave: the bytes come back, memory goes back, and a reader is served again.
    drop(readers);
    let released = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let metrics = http_get(&metrics_addr, "/metrics")?;
            if metrics.contains("\nnodectl_pod_log_reply_bytes_held 0\n") {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    anyhow::ensure!(
        matches!(released, Ok(Ok(()))),
        "reply bytes stayed held after the readers left"
    );
    let mut client = NodeDiagnosticsClient::connect(agent.endpoint.clone())
        .await?
        .max_decoding_message_size(8 << 20);
    let reply = client.tail_pod_log(request("busy")).await?.into_inner();
    assert!(reply.tail.len() > (4 << 20) - 200, "{}", reply.tail.len());
    let after = agent.rss_bytes()?;
    assert!(
        after < RSS_BOUND_BYTES,
        "the agent stayed at {} MiB after the readers left",
        after >> 20
    );
    assert!(agent.peak_rss_bytes()? < RSS_BOUND_BYTES);
    Ok(())
}
