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

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`: state is the 3rd field; utime and stime are the 14th and 15th.
    let after = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// Ticks the agent may use in 2 s of doing nothing: a spinning reader uses ~200.
const IDLE_TICKS_BOUND: u64 = 40;

fn idle_ticks(agent: &Agent) -> anyhow::Result<u64> {
    let before = cpu_ticks(agent.pid())?;
    std::thread::sleep(Duration::from_secs(2));
    Ok(cpu_ticks(agent.pid())? - before)
}

const GPU_RECORDS: &str = "3,7,950818166,-;amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE\n3,8,950818200,-;amdgpu 0000:c1:00.0: amdgpu: MES ring buffer is full.\n6,9,950818300,-;usb 1-1: new device\n";

fn event_count(endpoint: &str) -> anyhow::Result<usize> {
    let run = nodectl(&[
        "--endpoint",
        endpoint,
        "events",
        "--include-unclassified",
        "-o",
        "json",
    ])?;
    anyhow::ensure!(run.code == 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    Ok(json["events"].as_array().map_or(0, Vec::len))
}

#[test]
fn a_saved_file_or_a_closed_fifo_as_dev_kmsg_is_read_to_its_end_and_never_spun_on()
-> anyhow::Result<()> {
    // A regular file: read whole, then followed without spinning.
    let tree = tempfile::tempdir()?;
    write(tree.path(), "dev/kmsg", GPU_RECORDS)?;
    let agent = Agent::start(tree.path(), &["--full-kernel-log"])?;
    assert_eq!(event_count(&agent.endpoint)?, 3);
    let ticks = idle_ticks(&agent)?;
    assert!(
        ticks < IDLE_TICKS_BOUND,
        "{ticks} ticks in 2 s on a saved file"
    );
    drop(agent);

    // A FIFO whose writer wrote three records and closed.
    let tree = tempfile::tempdir()?;
    std::fs::create_dir_all(tree.path().join("dev"))?;
    let fifo = tree.path().join("dev/kmsg");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU)?;
    let agent = Agent::start(tree.path(), &["--full-kernel-log"])?;
    {
        use std::io::Write as _;
        let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo)?;
        writer.write_all(GPU_RECORDS.as_bytes())?;
    }
    let mut seen = 0;
    for _ in 0..100 {
        seen = event_count(&agent.endpoint)?;
        if seen == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(seen, 3, "every record of the FIFO, not just the first");
    let ticks = idle_ticks(&agent)?;
    assert!(
        ticks < IDLE_TICKS_BOUND,
        "{ticks} ticks in 2 s after the FIFO's writer closed"
    );
    Ok(())
}

#[test]
fn a_corrupt_saved_position_is_reported_and_replaced_and_counting_goes_on() -> anyhow::Result<()> {
    let tree = tempfile::tempdir()?;
    write(tree.path(), "dev/kmsg", GPU_RECORDS)?;
    write(tree.path(), "proc/sys/kernel/random/boot_id", "b00t\n")?;
    let state = tempfile::tempdir()?;
    let state_file = state.path().join("kmsg-state.json");
    // u64::MAX as the last counted seq stopped all counting.
    std::fs::write(
        &state_file,
        r#"{"boot_id":"b00t","last_counted_seq":18446744073709551615}"#,
    )?;
    let state_arg = state.path().to_str().context("path")?;
    let agent = Agent::start(
        tree.path(),
        &[
            "--state-dir",
            state_arg,
            "--metrics-listen",
            "127.0.0.1:0",
            "--full-kernel-log",
        ],
    )?;
    let metrics = nodectl_e2e::harness::http_get(
        agent.listener("metrics").context("metrics listener")?,
        "/metrics",
    )?;
    assert!(
        metrics.contains(r#"nodectl_kernel_events_total{class="hang",id="mes_timeout"} 1"#),
        "{metrics}"
    );
    assert!(agent.terminate()?);
    let saved = std::fs::read_to_string(&state_file)?;
    assert!(saved.contains(r#""last_counted_seq":9"#), "{saved}");

    // A FIFO as the state file left the pipeline silently empty.
    std::fs::remove_file(&state_file)?;
    nix::unistd::mkfifo(&state_file, nix::sys::stat::Mode::S_IRWXU)?;
    let agent = Agent::start(
        tree.path(),
        &["--state-dir", state_arg, "--full-kernel-log"],
    )?;
    assert_eq!(event_count(&agent.endpoint)?, 3);
    assert!(agent.terminate()?);
    assert!(
        std::fs::metadata(&state_file)?.is_file(),
        "the FIFO was replaced"
    );
    Ok(())
}

/// Runs the agent with `--unix PATH` where it must refuse to start: its exit and stderr.
fn agent_refusing(root: &Path, unix: &Path) -> anyhow::Result<(bool, String)> {
    let out = std::process::Command::new(nodectl_e2e::harness::binary("nodectl-agent")?)
        .arg("--host-root")
        .arg(root)
        .arg("--unix")
        .arg(unix)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn unix_sockets_are_never_taken_from_a_file_or_a_live_agent() -> anyhow::Result<()> {
    let root = nodectl_e2e::harness::node_fixture("no-gpu");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.sock");
    let path_arg = path.to_str().context("path")?;

    // A regular file with data at the path used to be deleted.
    std::fs::write(&path, "precious\n")?;
    let (ok, stderr) = agent_refusing(&root, &path)?;
    assert!(!ok && stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path)?, "precious\n");
    std::fs::remove_file(&path)?;

    // A stale socket (its agent was killed) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path)?);
    let first = Agent::start(&root, &["--unix", path_arg])?;
    let endpoint = format!("unix:{path_arg}");
    let run = nodectl(&["--endpoint", &endpoint, "node", "show", "-o", "json"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);

    // A second agent does not take over the live socket.
    let (ok, stderr) = agent_refusing(&root, &path)?;
    assert!(
        !ok && stderr.contains("another process answers"),
        "{stderr}"
    );
    let run = nodectl(&["--endpoint", &endpoint, "node", "show", "-o", "json"])?;
    assert_eq!(run.code, 0, "the first agent still serves: {}", run.stderr);

    // When the path has been taken by someone else since, the first agent leaves it on exit.
    std::fs::remove_file(&path)?;
    let other = std::os::unix::net::UnixListener::bind(&path)?;
    assert!(first.terminate()?);
    assert!(
        path.exists(),
        "the agent removed a socket that was not its own"
    );
    drop(other);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_event_streams_are_bounded_in_number_and_released_when_clients_leave()
-> anyhow::Result<()> {
    let tree = tempfile::tempdir()?;
    write(tree.path(), "dev/kmsg", GPU_RECORDS)?;
    let agent = Agent::start(tree.path(), &["--full-kernel-log"])?;
    let request = pb::StreamKernelEventsRequest {
        since_seq: 0,
        follow: true,
        classes: Vec::new(),
        include_unclassified: true,
        ..Default::default()
    };
    // Streams that are opened and never read, over several connections (each connection
    // carries at most 16 at once; one connection used to carry 10,000).
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..5 {
        let mut client = NodeDiagnosticsClient::connect(agent.endpoint.clone()).await?;
        for _ in 0..14 {
            match client.stream_kernel_events(request.clone()).await {
                Ok(stream) => open.push(stream),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
                    refused += 1;
                }
            }
        }
    }
    assert_eq!(open.len(), 64, "the bound on streams at once");
    assert_eq!(refused, 70 - 64);
    assert!(
        agent.rss_bytes()? < RSS_BOUND_BYTES,
        "agent grew past 64 MiB"
    );
    drop(open);
    // Every client left: their streams' permits come back.
    let mut client = NodeDiagnosticsClient::connect(agent.endpoint.clone()).await?;
    let mut reopened = None;
    for _ in 0..50 {
        match client.stream_kernel_events(request.clone()).await {
            Ok(stream) => {
                reopened = Some(stream);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(
        reopened.is_some(),
        "no stream could be opened after the clients left"
    );
    Ok(())
}

/// Replaces a file of the tree with a directory: unreadable as a file even for root.
fn make_unreadable(root: &Path, relative: &str) -> anyhow::Result<()> {
    let path = root.join(relative);
    std::fs::remove_file(&path)?;
    std::fs::create_dir(&path)?;
    Ok(())
}

fn check_json(root: &Path) -> anyhow::Result<(i32, serde_json::Value)> {
    let root = root.to_str().context("path")?;
    let run = nodectl(&["--host-root", root, "node", "check", "-o", "json"])?;
    Ok((run.code, serde_json::from_str(&run.stdout)?))
}

fn findings(json: &serde_json::Value) -> Vec<(String, String)> {
    json["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["id"].as_str().unwrap_or("").to_owned(),
                f["severity"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn unreadable_inputs_make_checks_unknown_never_dangerous_advice() -> anyhow::Result<()> {
    // cwsr_enable unreadable on a node booted with amdgpu.cwsr_enable=0: the unknown-parameter
    // check advised removing the correct argument.
    let tree = nodectl_e2e::harness::node_fixture_copy("strix-halo-healthy")?;
    let root = tree.path().join("root");
    make_unreadable(&root, "sys/module/amdgpu/parameters/cwsr_enable")?;
    let (_, json) = check_json(&root)?;
    let found = findings(&json);
    assert!(
        !found.contains(&("unknown_module_parameter".to_owned(), "warning".to_owned())),
        "{json}"
    );
    assert!(
        found.contains(&("unknown_module_parameter".to_owned(), "unknown".to_owned())),
        "{json}"
    );

    // The MES firmware unreadable on a 0x83 node: "no findings" hid the one critical check.
    let tree = nodectl_e2e::harness::node_fixture_copy("strix-halo-mes83")?;
    let root = tree.path().join("root");
    make_unreadable(
        &root,
        "sys/class/drm/card1/device/fw_version/mes_fw_version",
    )?;
    make_unreadable(&root, "sys/kernel/debug/dri/1/amdgpu_firmware_info")?;
    let (_, json) = check_json(&root)?;
    let found = findings(&json);
    assert!(
        found.contains(&("mes_firmware_known_bad".to_owned(), "unknown".to_owned())),
        "{json}"
    );
    let evidence = json["findings"].to_string();
    assert!(evidence.contains("mes_fw_version"), "{evidence}");
    Ok(())
}

#[test]
fn credentials_on_the_command_line_and_the_full_kernel_log_stay_on_the_node() -> anyhow::Result<()>
{
    let tree = tempfile::tempdir()?;
    let token = "0123456789abcdefSECRET";
    write(
        tree.path(),
        "proc/cmdline",
        &format!(
            "talos.platform=metal siderolink.api=https://omni.example:8090/?jointoken={token} talos.config=https://cfg.example/m?uuid=1&token={token} amdgpu.cwsr_enable=0\n"
        ),
    )?;
    // The classified ones, a context line of the driver, another subsystem's record, and a
    // user-space write in the driver's words (facility 1).
    write(
        tree.path(),
        "dev/kmsg",
        &format!(
            "{GPU_RECORDS}6,10,950818400,-;amdgpu 0000:c1:00.0: amdgpu: Fetched VBIOS from VFCT\n14,11,950818500,-;amdgpu 0000:c1:00.0: amdgpu: posing as the driver\n"
        ),
    )?;
    let agent = Agent::start(tree.path(), &[])?;
    let run = nodectl(&["--endpoint", &agent.endpoint, "node", "show", "-o", "json"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains(token), "{}", run.stdout);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert!(
        json["host"]["cmdline"]
            .as_str()
            .is_some_and(|c| c.contains("jointoken=<redacted:url-query>")
                && c.contains("amdgpu.cwsr_enable=0")),
        "{json}"
    );

    // Classified GPU events are served; the whole log only when the agent allows it.
    let run = nodectl(&["--endpoint", &agent.endpoint, "events", "-o", "json"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let events: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(
        events["events"].as_array().map(Vec::len),
        Some(2),
        "{events}"
    );
    // Unclassified records: the GPU driver's own lines as context, not the rest of the log,
    // nor what user space wrote in the driver's words.
    let run = nodectl(&[
        "--endpoint",
        &agent.endpoint,
        "events",
        "--include-unclassified",
        "-o",
        "json",
    ])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let events: serde_json::Value = serde_json::from_str(&run.stdout)?;
    let messages: Vec<&str> = events["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.contains(&"amdgpu 0000:c1:00.0: amdgpu: Fetched VBIOS from VFCT"),
        "{messages:?}"
    );
    assert!(
        !messages.iter().any(|m| m.starts_with("usb")),
        "{messages:?}"
    );
    assert!(
        !messages.iter().any(|m| m.contains("posing")),
        "{messages:?}"
    );
    assert_eq!(messages.len(), 3, "{messages:?}");
    Ok(())
}

/// Whether the peer closed `stream` within `wait`: reads (an HTTP/2 server sends its settings
/// at once) until end of file or an error.
fn closed_within(stream: &std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read as _;
    let deadline = std::time::Instant::now() + wait;
    let mut reader = stream;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || reader.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match reader.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

/// Sends a request's first line and then one header byte every 500 ms: whether the server
/// closed the connection within `wait`.
fn trickled_request_closed_within(addr: &str, wait: Duration) -> anyhow::Result<bool> {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")?;
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if stream.write_all(b"a").is_err() || closed_within(&stream, Duration::from_millis(500)) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[test]
fn idle_connections_are_capped_and_closed_and_the_agent_never_spins() -> anyhow::Result<()> {
    let agent = Agent::start(
        &nodectl_e2e::harness::node_fixture("no-gpu"),
        &["--metrics-listen", "127.0.0.1:0"],
    )?;
    let grpc = agent.endpoint.trim_start_matches("http://").to_owned();
    let metrics = agent.listener("metrics").context("metrics")?.to_owned();
    // 300 connections that never send a byte (400 of them used to exhaust the fd limit and
    // spin the accept loop at ~92 % of a core).
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(std::net::TcpStream::connect(&grpc)?);
    }
    let idle_metrics = std::net::TcpStream::connect(&metrics)?;
    let ticks = idle_ticks(&agent)?;
    assert!(
        ticks < IDLE_TICKS_BOUND,
        "{ticks} ticks in 2 s with 300 idle connections"
    );
    // Those past the cap of 256 were closed at once.
    let past_cap = idle
        .iter()
        .skip(256)
        .filter(|s| closed_within(s, Duration::from_millis(500)))
        .count();
    assert_eq!(past_cap, 300 - 256);
    // The silent ones are closed after the first-byte deadline (10 s), on both ports.
    assert!(closed_within(&idle[0], Duration::from_secs(20)));
    assert!(closed_within(&idle_metrics, Duration::from_secs(20)));
    let still_open = idle
        .iter()
        .take(256)
        .filter(|s| !closed_within(s, Duration::from_millis(200)))
        .count();
    assert_eq!(still_open, 0, "idle connections left open");
    drop(idle);
    // A request whose headers trickle in a byte at a time, on the metrics port, is closed after
    // the header-read deadline (10 s) instead of holding its connection forever.
    assert!(
        trickled_request_closed_within(&metrics, Duration::from_secs(30))?,
        "a trickled request kept its connection"
    );
    let run = nodectl(&["--endpoint", &agent.endpoint, "node", "show", "-o", "json"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    Ok(())
}

#[test]
fn huge_lines_are_cut_in_tables_and_huge_snapshots_still_arrive() -> anyhow::Result<()> {
    // A 32 MB kernel message: the table laid it out whole (19 s; 100 MB never finished).
    let line = format!("[ 1.0] amdgpu: {}\n", "x".repeat(32 << 20));
    let run = nodectl_e2e::harness::nodectl_with(
        &["events", "--file", "-", "--include-unclassified"],
        &[],
        Some(&line),
    )?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.len() < 100_000,
        "{} bytes of table",
        run.stdout.len()
    );
    assert!(run.stdout.contains("… (+"), "no cut marker");

    // 5001 cards with a long VBIOS string each: a snapshot over 5 MB, which the client's 4 MiB
    // message limit refused before.
    let tree = tempfile::tempdir()?;
    let vbios = format!("{}\n", "113-STRXLGEN-001-".repeat(60));
    for n in 0..5001 {
        let device = format!(
            "sys/devices/pci0000:00/0000:{:02x}:{:02x}.0",
            n / 256,
            n % 256
        );
        write(
            tree.path(),
            &format!("{device}/uevent"),
            "DRIVER=amdgpu\nPCI_ID=1002:1586\n",
        )?;
        write(tree.path(), &format!("{device}/vbios_version"), &vbios)?;
        let card = tree.path().join(format!("sys/class/drm/card{n}"));
        std::fs::create_dir_all(&card)?;
        std::os::unix::fs::symlink(tree.path().join(&device), card.join("device"))?;
    }
    let agent = Agent::start(tree.path(), &[])?;
    let run = nodectl(&["--endpoint", &agent.endpoint, "node", "show", "-o", "json"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(json["cards"].as_array().map(Vec::len), Some(5001));
    Ok(())
}

#[test]
fn summary_streams_the_log_instead_of_holding_it() -> anyhow::Result<()> {
    use std::io::Write as _;
    // 64 MiB of log through standard input; before, the whole input (and more) was held.
    let mut child = std::process::Command::new(nodectl_e2e::harness::binary("nodectl")?)
        .args(["events", "--file", "-", "--summary", "-o", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let chunk: String = (0..8192)
        .map(|i| {
            if i % 64 == 0 {
                "[ 1.0] amdgpu 0000:c1:00.0: amdgpu: MES ring buffer is full.\n".to_owned()
            } else {
                format!("[ 1.0] usb 1-1: line {i} of something that is not a GPU message\n")
            }
        })
        .collect();
    let mut written = 0usize;
    while written < 64 << 20 {
        stdin.write_all(chunk.as_bytes())?;
        written += chunk.len();
    }
    stdin.flush()?;
    // Still running (stdin open): its peak so far covers reading all of it.
    std::thread::sleep(Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM")?;
    drop(stdin);
    let out = child.wait_with_output()?;
    assert!(out.status.success());
    assert!(
        peak_kib < 48 * 1024,
        "nodectl peaked at {peak_kib} KiB for 64 MiB of log"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        json["counts"]["hang/mes_ring_full"],
        (written / chunk.len() * 128) as u64
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_never_returns_costs_one_deadline_and_health_says_so() -> anyhow::Result<()> {
    use nodectl_e2e::stalled_file::StalledFile;
    use tonic_health::ServingStatus;
    const SERVICE: &str = "nodectl.v1.NodeDiagnostics";
    if !Path::new("/dev/fuse").exists() {
        nodectl_e2e::harness::outside_program_missing("FUSE (/dev/fuse)");
        return Ok(());
    }
    let tree = nodectl_e2e::harness::node_fixture_copy("strix-halo-healthy")?;
    let root = tree.path().join("root");
    let device = root.join("sys/devices/pci0000:00/0000:00:08.1/0000:c1:00.0");
    let mut agent = Agent::start(&root, &["--metrics-listen", "127.0.0.1:0"])?;
    let metrics_addr = agent.listener("metrics").context("metrics")?.to_owned();
    let stuck_gauge = |n: u32| format!("\nnodectl_host_reads_stuck {n}\n");
    assert_eq!(
        nodectl_e2e::harness::health(&agent.endpoint, SERVICE).await?,
        ServingStatus::Serving as i32
    );
    // The clock file's reads never return, as while the SMU hangs. Mounted after the agent
    // started (and so released before the agent is dropped).
    let stalled = StalledFile::mount_over(&device.join("pp_dpm_sclk"))?;
    let mut client = NodeDiagnosticsClient::connect(agent.endpoint.clone()).await?;
    let snapshot = client
        .get_snapshot(pb::GetSnapshotRequest::default())
        .await?
        .into_inner();
    let sclk_problem = |snapshot: &pb::Snapshot| {
        snapshot
            .problems
            .iter()
            .find(|p| p.path.ends_with("/pp_dpm_sclk"))
            .map(|p| p.reason.clone())
    };
    let reason = sclk_problem(&snapshot)
        .with_context(|| format!("no problem for the stalled file in {:?}", snapshot.problems))?;
    assert!(
        reason.contains("did not return within 2 s: the SMU may be hung"),
        "{reason}"
    );
    // The rest of the card was read.
    assert_eq!(snapshot.cards.len(), 1);
    assert!(!snapshot.cards[0].firmware.is_empty());
    // Health says the agent is degraded, and it answers.
    assert_eq!(
        nodectl_e2e::harness::health(&agent.endpoint, SERVICE).await?,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        nodectl_e2e::harness::health(&agent.endpoint, "").await?,
        ServingStatus::Serving as i32
    );
    let metrics = nodectl_e2e::harness::http_get(&metrics_addr, "/metrics")?;
    assert!(metrics.contains(&stuck_gauge(1)), "{metrics}");

    // 600 snapshots later (600 used to leave 513 threads behind), the stalled file was read
    // once, and the threads stay few.
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..600 {
        let mut client = client.clone();
        requests.spawn(async move {
            let sampled = i % 50 == 0;
            client
                .get_snapshot(pb::GetSnapshotRequest {
                    sample_count: if sampled { 3 } else { 1 },
                    sample_interval_ms: 10,
                })
                .await
                .map(|reply| sclk_problem(&reply.into_inner()))
        });
    }
    while let Some(done) = requests.join_next().await {
        match done? {
            Ok(problem) => assert!(
                problem.is_some_and(|p| p.contains("an earlier read has not returned")),
                "a later snapshot lacks the stuck read"
            ),
            // Sampling snapshots past their bound are refused, never queued.
            Err(status) => assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}"),
        }
    }
    assert_eq!(
        stalled.reads_started(),
        1,
        "the stalled file was read again"
    );
    let threads = agent.threads()?;
    assert!(threads < 64, "{threads} threads after 600 snapshots");
    assert!(agent.rss_bytes()? < RSS_BOUND_BYTES);

    // The SMU answers again: the read returns, health and the file come back.
    stalled.release();
    anyhow::ensure!(
        nodectl_e2e::harness::serving_within(&agent.endpoint, SERVICE, Duration::from_secs(30))
            .await,
        "health stayed NOT_SERVING"
    );
    let snapshot = client
        .get_snapshot(pb::GetSnapshotRequest::default())
        .await?
        .into_inner();
    assert_eq!(sclk_problem(&snapshot), None);
    assert!(
        snapshot.cards[0]
            .dpm_clocks
            .iter()
            .any(|c| c.domain == "sclk")
    );
    let metrics = nodectl_e2e::harness::http_get(&metrics_addr, "/metrics")?;
    assert!(metrics.contains(&stuck_gauge(0)), "{metrics}");

    // Stuck again, on another file: the in-process agent of `nodectl --host-root` answers with
    // the same problem and its main thread returns, and the agent stops on SIGTERM, although a
    // thread of each stays in the read (as one blocked in amdgpu would) until it returns.
    let stalled = StalledFile::mount_over(&device.join("gpu_busy_percent"))?;
    let output = tree.path().join("show.json");
    let mut show = std::process::Command::new(nodectl_e2e::harness::binary("nodectl")?)
        .args(["--host-root", root.to_str().context("path")?])
        .args(["node", "show", "-o", "json"])
        .stdout(std::fs::File::create(&output)?)
        .spawn()?;
    let show_pid = show.id();
    let ended = tokio::task::spawn_blocking(move || {
        nodectl_e2e::harness::main_thread_ends_within(show_pid, Duration::from_secs(60))
    })
    .await?;
    let shown = std::fs::read_to_string(&output)?;
    let stopped = tokio::task::spawn_blocking(move || -> anyhow::Result<(bool, Agent)> {
        let stopped = agent.terminate_main_within(Duration::from_secs(20))?;
        Ok((stopped, agent))
    })
    .await??;
    // Released before asserting, so that a failure leaves no process behind.
    drop(stalled);
    assert!(ended, "the in-process node show did not end");
    assert!(shown.contains("the SMU may be hung"), "{shown}");
    assert!(show.wait()?.success());
    let (stopped, mut agent) = stopped;
    assert!(stopped, "the agent did not stop on SIGTERM");
    assert!(agent.wait_exit()?, "the agent exited with an error");
    Ok(())
}

/// Readiness follows the kernel-log reader: a node whose log is there and cannot be read is
/// not ready (no events, no incidents), while a tree that holds no kernel log at all is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_not_serving_while_the_kernel_log_reader_is_down() -> anyhow::Result<()> {
    use tonic_health::ServingStatus;
    const SERVICE: &str = "nodectl.v1.NodeDiagnostics";
    let tree = nodectl_e2e::harness::node_fixture_copy("strix-halo-healthy")?;
    let root = tree.path().join("root");
    let kmsg_up = |agent: &Agent| -> anyhow::Result<Option<String>> {
        let metrics = agent.listener("metrics").context("metrics listener")?;
        let body = nodectl_e2e::harness::http_get(metrics, "/metrics")?;
        Ok(body
            .lines()
            .find(|l| l.starts_with("nodectl_event_source_up{source=\"kmsg\"}"))
            .map(str::to_owned))
    };
    let metrics_flags = ["--metrics-listen", "127.0.0.1:0"];
    let without_log = Agent::start(&root, &metrics_flags)?;
    assert_eq!(
        nodectl_e2e::harness::health(&without_log.endpoint, SERVICE).await?,
        ServingStatus::Serving as i32,
        "a tree without a kernel log has nothing to read"
    );
    assert_eq!(kmsg_up(&without_log)?, None, "no reader, no gauge");
    drop(without_log);

    // A log that is read: the gauge says 1.
    let scratch = tempfile::tempdir()?;
    std::fs::create_dir_all(scratch.path().join("dev"))?;
    std::fs::write(
        scratch.path().join("dev/kmsg"),
        "6,1,1000000,-;Linux version 6.18.4-talos\n",
    )?;
    let reading = Agent::start(scratch.path(), &metrics_flags)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while kmsg_up(&reading)?.as_deref() != Some("nodectl_event_source_up{source=\"kmsg\"} 1") {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{:?}",
            kmsg_up(&reading)?
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(reading);

    // Something at dev/kmsg that no reader can read as a kernel log.
    std::fs::create_dir_all(root.join("dev/kmsg"))?;
    let agent = Agent::start(&root, &metrics_flags)?;
    assert_eq!(
        nodectl_e2e::harness::health(&agent.endpoint, SERVICE).await?,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        kmsg_up(&agent)?.as_deref(),
        Some("nodectl_event_source_up{source=\"kmsg\"} 0"),
        "the exporter says the reader is down, as readiness does"
    );
    // The agent answers: liveness must not restart it for this.
    assert_eq!(
        nodectl_e2e::harness::health(&agent.endpoint, "").await?,
        ServingStatus::Serving as i32
    );
    let mut client = NodeDiagnosticsClient::connect(agent.endpoint.clone()).await?;
    let snapshot = client
        .get_snapshot(pb::GetSnapshotRequest::default())
        .await?
        .into_inner();
    assert_eq!(snapshot.cards.len(), 1, "snapshots are still served");
    Ok(())
}
