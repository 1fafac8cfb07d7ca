//! The agent against hostile requests and host files: each case once broke it, and the bound, error or problem entry that now holds.

#![allow(clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use nodectl_e2e::harness::{Agent, nodectl};
use nodectl_proto::nodectl::v1 as pb;
use pb::node_diagnostics_client::NodeDiagnosticsClient;

/// Agent memory stays under this through every hostile case (it idles near 10 MiB).
const RSS_BOUND_BYTES: u64 = 64 * 1024 * 1024;

fn write(root: &Path, relative: &str, content: &str) -> anyhow::Result<()> {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    std::fs::write(path, content)?;
    Ok(())
}

/// A host tree whose files never end, never answer, or are too large to be kernel attributes.
fn hostile_tree() -> anyhow::Result<tempfile::TempDir> {
    let tree = tempfile::tempdir()?;
    let root = tree.path();
    std::fs::create_dir_all(root.join("proc/sys/kernel/random"))?;
    std::fs::create_dir_all(root.join("sys/module/ttm/parameters"))?;
    // Endless: a link to /dev/zero where the boot id and the command line should be.
    std::os::unix::fs::symlink("/dev/zero", root.join("proc/sys/kernel/random/boot_id"))?;
    std::os::unix::fs::symlink("/dev/zero", root.join("proc/cmdline"))?;
    // Never answers: a FIFO no one writes, standing in for a read stalled by a hung SMU.
    nix::unistd::mkfifo(
        &root.join("proc/sys/kernel/osrelease"),
        nix::sys::stat::Mode::S_IRWXU,
    )?;
    // Too large for any kernel attribute.
    write(
        root,
        "sys/module/ttm/parameters/pages_limit",
        &"1".repeat(8 << 20),
    )?;
    write(root, "proc/sys/kernel/hostname", "hostile\n")?;
    Ok(tree)
}

#[test]
fn endless_fifo_and_huge_files_become_problems_and_the_agent_stays_small() -> anyhow::Result<()> {
    let tree = hostile_tree()?;
    // An endless boot_id used to keep the agent from ever becoming ready.
    let mut agent = Agent::start(tree.path(), &[])?;
    let run = nodectl(&["--endpoint", &agent.endpoint, "node", "show", "-o", "json"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    let problems = json["problems"].to_string();
    for (path, reason) in [
        ("/proc/cmdline", "character device"),
        ("/proc/sys/kernel/random/boot_id", "character device"),
        ("/proc/sys/kernel/osrelease", "FIFO"),
        ("/sys/module/ttm/parameters/pages_limit", "longer than"),
    ] {
        assert!(
            json["problems"]
                .as_array()
                .context("problems")?
                .iter()
                .any(|p| p["path"] == path
                    && p["reason"].as_str().is_some_and(|r| r.contains(reason))),
            "{path}: {reason} not in {problems}"
        );
    }
    assert_eq!(json["host"]["hostname"], "hostile");
    assert!(
        agent.rss_bytes()? < RSS_BOUND_BYTES,
        "agent grew past 64 MiB"
    );
    // The in-process agent reads the same tree without hanging in open().
    let root = tree.path().to_str().context("path")?;
    let run = nodectl(&["--host-root", root, "node", "show", "-o", "json"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(agent.terminate_within(Duration::from_secs(10))?, Some(true));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_sampling_is_refused_and_a_cancelled_one_stops() -> anyhow::Result<()> {
    let mut agent = Agent::start(
        &nodectl_e2e::harness::node_fixture("strix-halo-healthy"),
        &[],
    )?;
    let mut client = NodeDiagnosticsClient::connect(agent.endpoint.clone()).await?;
    // 4294967295 readings 0 ms apart passed the window check (0 × n = 0) and grew the agent
    // by ~27 MB/s.
    let refused = client
        .get_snapshot(pb::GetSnapshotRequest {
            sample_count: u32::MAX,
            sample_interval_ms: 0,
        })
        .await
        .expect_err("an unbounded sample count is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("sample_count"), "{refused}");
    let refused = client
        .get_snapshot(pb::GetSnapshotRequest {
            sample_count: 100,
            sample_interval_ms: 60_000,
        })
        .await
        .expect_err("a window past the bound is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // A 60 s sampling request, abandoned by its client after a moment: the agent neither grows
    // nor keeps the work going, and stops at once on SIGTERM instead of when the window ends.
    let mut abandoned = client.clone();
    let request = tokio::spawn(async move {
        abandoned
            .get_snapshot(pb::GetSnapshotRequest {
                sample_count: 121,
                sample_interval_ms: 500,
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    request.abort();
    let normal = client
        .get_snapshot(pb::GetSnapshotRequest::default())
        .await?
        .into_inner();
    assert_eq!(normal.cards.len(), 1);
    assert!(agent.rss_bytes()? < RSS_BOUND_BYTES);
    let exited =
        tokio::task::spawn_blocking(move || agent.terminate_within(Duration::from_secs(20)))
            .await??;
    assert_eq!(exited, Some(true), "the agent did not exit on SIGTERM");
    Ok(())
}

#[test]
fn sequence_numbers_that_start_over_are_restarts_not_losses() -> anyhow::Result<()> {
    let stream =
        "6,5,1000,-;usb 1-1: a\n6,18446744073709551615,2000,-;usb 1-1: b\n6,3,3000,-;usb 1-1: c\n";
    // A saved log: 18446744073709551612 records were reported lost.
    let run = nodectl_e2e::harness::nodectl_with(
        &[
            "events",
            "--file",
            "-",
            "--include-unclassified",
            "-o",
            "json",
        ],
        &[],
        Some(stream),
    )?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(json["records_lost"], 0);
    assert_eq!(json["seq_restarts"], 2);
    assert_eq!(json["events"].as_array().map(Vec::len), Some(3));
    // The same records as a tree's kernel log, through the agent's reader.
    let tree = tempfile::tempdir()?;
    write(tree.path(), "dev/kmsg", stream)?;
    let root = tree.path().to_str().context("path")?;
    let run = nodectl(&[
        "--host-root",
        root,
        "events",
        "--include-unclassified",
        "-o",
        "json",
    ])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(json["records_lost"], 0, "{json}");
    assert_eq!(json["events"].as_array().map(Vec::len), Some(3), "{json}");
    Ok(())
}
