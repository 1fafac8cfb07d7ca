//! `nodectl events` in-process and through a real agent give the same answer: a saved kmsg stream in a host tree is replayed through both, at once and in follow mode.
//!
//! The tree's `dev/kmsg` is a regular file (as in a bug-report bundle), so both read the same
//! records; its `/proc/stat` carries the boot time, so both compute the same wall-clock times.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nodectl_e2e::harness::{self, Agent, fixture, nodectl};
use serde_json::Value;

/// 2025-08-05T09:00:00Z, the boot of the kmsg scenario.
const SCENARIO_BTIME: u64 = 1_754_384_400;

/// A host tree holding the scenario's kmsg records as its `dev/kmsg`.
fn replay_tree() -> anyhow::Result<tempfile::TempDir> {
    let tree = tempfile::tempdir()?;
    let root = tree.path();
    std::fs::create_dir_all(root.join("dev"))?;
    std::fs::create_dir_all(root.join("proc/sys/kernel/random"))?;
    std::fs::copy(fixture("kmsg/scenario.kmsg.log"), root.join("dev/kmsg"))?;
    std::fs::write(
        root.join("proc/sys/kernel/random/boot_id"),
        "5e1f0c1e-7a2b-4c3d-9e8f-0a1b2c3d4e5f\n",
    )?;
    std::fs::write(
        root.join("proc/stat"),
        format!("cpu  1 2 3 4 5 6 7 0 0 0\nbtime {SCENARIO_BTIME}\nprocesses 42\n"),
    )?;
    Ok(tree)
}

fn events_json(source: &[&str], extra: &[&str]) -> anyhow::Result<Value> {
    let mut args = source.to_vec();
    args.extend(["events", "-o", "json"]);
    args.extend_from_slice(extra);
    let run = nodectl(&args)?;
    anyhow::ensure!(
        run.code == 0,
        "nodectl {args:?}: exit {}: {}",
        run.code,
        run.stderr
    );
    serde_json::from_str(&run.stdout).context("events -o json")
}

fn path_arg(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("non-UTF-8 path")
}

#[test]
fn a_saved_stream_gives_the_same_json_in_process_and_through_an_agent() -> anyhow::Result<()> {
    let tree = replay_tree()?;
    let root = path_arg(tree.path())?;
    let agent = Agent::start(tree.path(), &["--full-kernel-log"])?;
    for extra in [
        &[][..],
        &["--include-unclassified"][..],
        &["--class", "reset", "--since-seq", "10"][..],
    ] {
        let in_process = events_json(&["--host-root", root], extra)?;
        let through_agent = events_json(&["--endpoint", &agent.endpoint], extra)?;
        assert_eq!(in_process, through_agent, "{extra:?}");
    }
    let json = events_json(&["--host-root", root], &[])?;
    assert_eq!(json["boot_id"], "5e1f0c1e-7a2b-4c3d-9e8f-0a1b2c3d4e5f");
    assert_eq!(json["boot_time"], "2025-08-05T09:00:00Z");
    let kinds = harness::incident_kinds(&json);
    assert_eq!(
        kinds,
        [
            "mes_hang_reset",
            "page_fault_storm",
            "ring_timeout_reset",
            "mes_wedged"
        ]
    );
    // The saved stream is over: every incident is closed, the quiet wedge at its end too.
    let incidents = json["incidents"].as_array().context("incidents")?;
    assert!(incidents.iter().all(|i| i["closed"] == true), "{json}");
    let mes = json["events"]
        .as_array()
        .context("events")?
        .iter()
        .find(|e| e["id"] == "mes_timeout")
        .context("mes_timeout")?;
    // seq 7 at 950.818166 s after boot.
    assert_eq!(mes["seq"], 7);
    assert_eq!(mes["time"], "2025-08-05T09:15:50.818166Z");
    assert!(agent.terminate()?);
    Ok(())
}

/// Starts `nodectl events --follow -o json` and collects its lines until `done` holds for one,
/// or 60 s pass.
fn follow_until(source: &[&str], done: impl Fn(&Value) -> bool) -> anyhow::Result<Vec<Value>> {
    let mut args = source.to_vec();
    args.extend(["events", "--follow", "-o", "json"]);
    let (mut child, rx) = harness::nodectl_lines(&args)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let value: Value = serde_json::from_str(&line)
                    .with_context(|| format!("not a JSON line: {line}"))?;
                let finished = done(&value);
                lines.push(value);
                if finished {
                    break Ok(lines);
                }
            }
            Err(_) => {
                break Err(anyhow::anyhow!(
                    "{source:?}: condition not met in 60 s; got {lines:?}"
                ));
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn wedge_closed(line: &Value) -> bool {
    line["incident"]["kind"] == "mes_wedged" && line["incident"]["closed"] == true
}

#[test]
fn in_follow_mode_a_quiet_incident_closes_without_a_later_record() -> anyhow::Result<()> {
    let tree = replay_tree()?;
    let root: PathBuf = tree.path().to_owned();
    let agent = Agent::start(&root, &["--full-kernel-log"])?;
    let in_process = follow_until(&["--host-root", path_arg(&root)?], wedge_closed)?;
    let through_agent = follow_until(&["--endpoint", &agent.endpoint], wedge_closed)?;
    assert_eq!(in_process, through_agent);
    assert!(in_process[0].get("header").is_some(), "{:?}", in_process[0]);
    // The wedge's last event is seq 38; the close comes from the clock, not from a record of it.
    let close = in_process.last().context("no line")?;
    assert_eq!(close["incident"]["last_seq"], 38);
    assert_eq!(close["incident"]["event_counts"]["mes_ring_full"], 3);
    let open_before: Vec<&Value> = in_process
        .iter()
        .filter(|l| l["incident"]["incident_id"] == close["incident"]["incident_id"])
        .collect();
    assert!(
        open_before.len() >= 2 && open_before[0]["incident"]["closed"] == false,
        "the wedge was reported open before it closed: {open_before:?}"
    );
    assert!(agent.terminate()?);
    Ok(())
}

#[test]
fn the_class_filter_applies_to_incidents_too() -> anyhow::Result<()> {
    // `--class hang,reset` listed a page_fault_storm, whose events are all faults.
    let saved = fixture("kmsg/scenario.dmesg.log");
    let path = saved.to_str().context("path")?;
    let from_file = events_json(
        &[],
        &["--file", path, "--year", "2025", "--class", "hang,reset"],
    )?;
    let tree = replay_tree()?;
    let root = path_arg(tree.path())?;
    let from_tree = events_json(&["--host-root", root], &["--class", "hang,reset"])?;
    for json in [&from_file, &from_tree] {
        let kinds = harness::incident_kinds(json);
        assert!(kinds.contains(&"mes_hang_reset"), "{kinds:?}");
        assert!(!kinds.contains(&"page_fault_storm"), "{kinds:?}");
    }
    assert_eq!(
        harness::incident_kinds(&from_file),
        harness::incident_kinds(&from_tree)
    );
    Ok(())
}

#[test]
fn since_seq_applies_to_saved_kmsg_streams_and_is_refused_without_seqs() -> anyhow::Result<()> {
    let kmsg = fixture("kmsg/scenario.kmsg.log");
    let kmsg = kmsg.to_str().context("path")?;
    let json = events_json(&[], &["--file", kmsg, "--since-seq", "30"])?;
    let seqs: Vec<u64> = json["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(!seqs.is_empty() && seqs.iter().all(|s| *s > 30), "{seqs:?}");
    assert!(
        json["incidents"]
            .as_array()
            .context("incidents")?
            .iter()
            .all(|i| i["last_seq"].as_u64().is_some_and(|s| s > 30)),
        "{json}"
    );
    // A dmesg text has no sequence numbers: the flag used to be ignored without a word.
    let dmesg = fixture("kmsg/scenario.dmesg.log");
    let dmesg = dmesg.to_str().context("path")?;
    let run = nodectl(&["events", "--file", dmesg, "--since-seq", "5"])?;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("no kernel sequence numbers"),
        "{}",
        run.stderr
    );
    Ok(())
}

/// `--since-cursor kmsg=N` is `--since-seq N`, in-process, through an agent and over a file;
/// a source a file has no cursors of, or a start given twice, is refused with its reason.
#[test]
fn since_cursor_kmsg_is_since_seq_and_bad_starts_are_refused() -> anyhow::Result<()> {
    let tree = replay_tree()?;
    let root = path_arg(tree.path())?;
    let agent = Agent::start(tree.path(), &["--full-kernel-log"])?;
    let kmsg = fixture("kmsg/scenario.kmsg.log");
    let kmsg = path_arg(&kmsg)?;
    for place in [
        &["--host-root", root][..],
        &["--endpoint", &agent.endpoint][..],
    ] {
        let by_seq = events_json(place, &["--since-seq", "30"])?;
        let by_cursor = events_json(place, &["--since-cursor", "kmsg=30"])?;
        assert_eq!(by_seq, by_cursor, "{place:?}");
        assert!(!by_seq["events"].as_array().context("events")?.is_empty());
    }
    assert_eq!(
        events_json(&[], &["--file", kmsg, "--since-seq", "30"])?,
        events_json(&[], &["--file", kmsg, "--since-cursor", "kmsg=30"])?
    );
    for (args, says) in [
        (
            &["events", "--file", kmsg, "--since-cursor", "kfd_smi=3"][..],
            "carry no cursor",
        ),
        (
            &["events", "--file", kmsg, "--since-cursor", "gpu=3"][..],
            "unknown source; known: kmsg, kfd_smi",
        ),
        (
            &[
                "events",
                "--file",
                kmsg,
                "--since-seq",
                "5",
                "--since-cursor",
                "kmsg=6",
            ][..],
            "both say where the kernel log starts",
        ),
        (
            &[
                "events",
                "--file",
                kmsg,
                "--since-cursor",
                "kmsg=5",
                "--since-cursor",
                "kmsg=6",
            ][..],
            "names kmsg twice",
        ),
    ] {
        let run = nodectl(args)?;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    Ok(())
}

/// `--follow` stopped by Ctrl-C says which flags resume after the last event it showed, and
/// a stream started with them sends none of those events again.
#[test]
fn a_follow_stopped_by_ctrl_c_says_where_to_resume() -> anyhow::Result<()> {
    use std::io::{BufRead as _, Read as _};
    let tree = replay_tree()?;
    let agent = Agent::start(tree.path(), &["--full-kernel-log"])?;
    let all = events_json(&["--endpoint", &agent.endpoint], &[])?;
    let last_seq = all["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .context("the scenario has events")?;

    /// Killed if the test fails before it ends.
    struct Follow(std::process::Child);
    impl Drop for Follow {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut follow = Follow(
        std::process::Command::new(harness::binary("nodectl")?)
            .args([
                "--endpoint",
                &agent.endpoint,
                "events",
                "--follow",
                "-o",
                "json",
            ])
            .env("XDG_DATA_HOME", harness::NO_USER_DATA)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?,
    );
    let stdout = follow.0.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        let message: Value = serde_json::from_str(&line)?;
        if message["event"]["seq"].as_u64() == Some(last_seq) {
            break;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(follow.0.id())?),
        nix::sys::signal::Signal::SIGINT,
    )?;
    // Bounded: a Ctrl-C the client missed fails the test instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = follow.0.try_wait()? {
            break status;
        }
        anyhow::ensure!(Instant::now() < deadline, "nodectl ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    follow
        .0
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut stderr)?;
    assert!(status.success(), "{status}: {stderr}");
    let resume = format!("resume after the last event shown: --since-cursor kmsg={last_seq}");
    assert!(stderr.contains(&resume), "{stderr}");

    let after = events_json(
        &["--endpoint", &agent.endpoint],
        &["--since-cursor", &format!("kmsg={last_seq}")],
    )?;
    assert_eq!(after["events"], Value::Array(Vec::new()), "{after}");
    Ok(())
}
