//! The kernel log pipeline end to end: saved logs in every style (golden files), the real /dev/kmsg, agent streams, restarts and metrics.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nodectl_e2e::harness::{self, Agent, fixture, nodectl, nodectl_with, unique_tag, write_kmsg};

const STYLES: [&str; 12] = [
    "kmsg",
    "dmesg",
    "dmesg-T",
    "dmesg-x",
    "journal-short",
    "journal-short-precise",
    "journal-short-iso",
    "journal-short-monotonic",
    "journal-pl",
    "syslog",
    "talos",
    "kubectl",
];

/// The format `events --file` says each style is.
fn format_of(style: &str) -> &'static str {
    match style {
        "kmsg" => "kmsg",
        "dmesg" => "dmesg",
        "dmesg-T" => "dmesg_time",
        "dmesg-x" => "dmesg_decoded",
        "journal-short-iso" => "journal_iso",
        "journal-short-monotonic" => "journal_monotonic",
        "talos" => "talos",
        "kubectl" => "kubectl",
        _ => "journal",
    }
}

fn events_json(file: &Path, extra: &[&str]) -> anyhow::Result<serde_json::Value> {
    let path = file.to_str().context("path")?;
    let mut args = vec!["events", "--file", path, "--year", "2025", "-o", "json"];
    args.extend_from_slice(extra);
    let run = nodectl(&args)?;
    anyhow::ensure!(run.code == 0, "exit {}: {}", run.code, run.stderr);
    Ok(serde_json::from_str(&run.stdout)?)
}

/// Compares with the golden file beside the fixture; NODECTL_UPDATE_GOLDEN=1 rewrites it.
fn assert_golden(fixture_path: &Path, json: &serde_json::Value) -> anyhow::Result<()> {
    harness::assert_golden(&fixture_path.with_extension("golden.json"), json)
}

fn ids(json: &serde_json::Value) -> Vec<String> {
    json["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["id"].as_str().unwrap_or("-").to_owned())
        .collect()
}

fn incident_summary(json: &serde_json::Value) -> Vec<String> {
    json["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            format!(
                "{} {} {} {} {}",
                i["kind"], i["event_counts"], i["process"], i["pid"], i["recovered"]
            )
        })
        .collect()
}

#[test]
fn the_scenario_classifies_the_same_in_every_timestamp_style() -> anyhow::Result<()> {
    let mut reference: Option<(Vec<String>, Vec<String>)> = None;
    for style in STYLES {
        let path = fixture(&format!("kmsg/scenario.{style}.log"));
        let json = events_json(&path, &[])?;
        assert_golden(&path, &json)?;
        assert_eq!(json["input"]["format"], format_of(style), "{style}");
        assert_eq!(
            json["input"]["lines_recognised"], json["input"]["lines_read"],
            "{style}"
        );
        let kinds = harness::incident_kinds(&json);
        assert_eq!(
            kinds,
            [
                "mes_hang_reset",
                "page_fault_storm",
                "ring_timeout_reset",
                "mes_wedged"
            ],
            "{style}"
        );
        let incidents = json["incidents"].as_array().context("incidents")?;
        assert_eq!(incidents[0]["recovered"], true, "{style}");
        assert_eq!(incidents[1]["process"], "llama-server", "{style}");
        assert_eq!(incidents[1]["pid"], 4242, "{style}");
        assert_eq!(
            incidents[3]["recovered"],
            serde_json::Value::Null,
            "{style}"
        );
        assert_eq!(incidents[3]["event_counts"]["mes_ring_full"], 3, "{style}");
        let events = json["events"].as_array().context("events")?;
        assert!(events.iter().all(|e| e["user_written"] == false), "{style}");
        let mes = events
            .iter()
            .find(|e| e["id"] == "mes_timeout")
            .context("mes_timeout")?;
        assert_eq!(mes["fields"]["mes_op"], "REMOVE_QUEUE");
        assert_eq!(mes["device"], "0000:c1:00.0");
        let summary = (ids(&json), incident_summary(&json));
        match &reference {
            None => reference = Some(summary),
            Some(r) => assert_eq!(&summary, r, "{style} differs from kmsg"),
        }
    }
    Ok(())
}

/// Excerpts from public reports (reports/README.md names each source): firmware that did not
/// load and a GPU that did not initialise, KIQ failures during a reset, display engine timeouts.
#[test]
fn report_excerpts_give_their_incidents() -> anyhow::Result<()> {
    let cases: [(&str, &[&str], &[&str]); 6] = [
        (
            "firmware-psp-missing.dmesg.log",
            &["gpu_init_failed"],
            &[
                "firmware_load_failed",
                "ip_block_init_failed",
                "gpu_init_failed",
            ],
        ),
        (
            "firmware-gpu-info-missing.dmesg.log",
            &["gpu_init_failed"],
            &["firmware_load_failed", "gpu_init_failed"],
        ),
        (
            "firmware-mc-missing.dmesg.log",
            &["gpu_init_failed"],
            &[
                "firmware_load_failed",
                "ip_block_init_failed",
                "gpu_init_failed",
            ],
        ),
        (
            "kiq-ring-test-during-reset.dmesg.log",
            &["ring_timeout_reset"],
            &[
                "ring_test_failed",
                "kiq_queue_disable_failed",
                "cp_gfx_halt_failed",
                "gpu_reset_mode",
            ],
        ),
        (
            "kiq-then-baco-reset.journal.log",
            &["gpu_reset"],
            &[
                "ring_test_failed",
                "kiq_queue_disable_failed",
                "gpu_reset_mode",
            ],
        ),
        (
            "dmub-idle-timeout.journal.log",
            &["display_firmware_hang"],
            &["dmub_timeout"],
        ),
    ];
    for (name, kinds, ids_seen) in cases {
        let path = fixture(&format!("kmsg/reports/{name}"));
        let json = events_json(&path, &[])?;
        assert_golden(&path, &json)?;
        assert_eq!(harness::incident_kinds(&json), kinds, "{name}");
        let seen: BTreeSet<String> = ids(&json).into_iter().collect();
        for id in ids_seen {
            assert!(seen.contains(*id), "{name}: no {id} in {seen:?}");
        }
    }
    // The file the kernel asked for is kept, so the action can name it.
    let json = events_json(
        &fixture("kmsg/reports/firmware-gpu-info-missing.dmesg.log"),
        &[],
    )?;
    let files: Vec<&str> = json["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["fields"]["firmware"].as_str())
        .collect();
    assert_eq!(
        files,
        [
            "amdgpu/arcturus_gpu_info.bin",
            "amdgpu/arcturus_gpu_info.bin"
        ]
    );
    Ok(())
}

/// Text pasted out of a report, with a prefix of no known format: the same events, found at
/// their GPU marker; a FreeBSD drm-kmod excerpt with its own prefixes and an older MES wording.
#[test]
fn pasted_and_freebsd_logs_give_their_events() -> anyhow::Result<()> {
    let reference = ids(&events_json(&fixture("kmsg/scenario.kmsg.log"), &[])?);
    let path = fixture("kmsg/scenario.pasted.log");
    let json = events_json(&path, &[])?;
    assert_golden(&path, &json)?;
    assert_eq!(ids(&json), reference);
    assert_eq!(json["input"]["format"], "none");
    assert!(json["input"]["lines_by_format"]["located"].as_u64() > Some(30));

    let path = fixture("kmsg/freebsd.syslog.log");
    let json = events_json(&path, &[])?;
    assert_golden(&path, &json)?;
    assert_eq!(
        ids(&json),
        [
            "ring_timeout",
            "process_info",
            "gpu_reset_begin",
            "mes_timeout",
            "gpu_reset_mode",
            "gpu_reset_resume",
            "vram_lost",
            "gpu_reset_succeeded"
        ]
    );
    assert_eq!(json["input"]["format"], "journal");
    assert_eq!(harness::incident_kinds(&json).len(), 1);
    Ok(())
}

/// Operators read a MES timeout, a ring timeout and a queue preemption time out as a hang.
#[test]
fn class_hang_lists_the_mes_ring_and_preemption_timeouts() -> anyhow::Result<()> {
    let json = events_json(&fixture("kmsg/catalogue.dmesg.log"), &["--class", "hang"])?;
    let seen: BTreeSet<String> = ids(&json).into_iter().collect();
    for id in ["mes_timeout", "ring_timeout", "queue_preemption_timeout"] {
        assert!(
            seen.contains(id),
            "{id} missing from --class hang: {seen:?}"
        );
    }
    assert!(
        json["events"]
            .as_array()
            .context("events")?
            .iter()
            .all(|e| e["class"] == "hang")
    );
    let mes = json["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| e["id"] == "mes_timeout")
        .count();
    assert_eq!(mes, 5, "every MES wording of the catalogue");
    Ok(())
}

#[test]
fn user_written_records_are_marked_and_never_gpu_events() -> anyhow::Result<()> {
    for style in ["kmsg", "journal-short", "talos"] {
        let path = fixture(&format!("kmsg/scenario.{style}.log"));
        let json = events_json(&path, &["--include-unclassified"])?;
        let fake: Vec<&serde_json::Value> = json["events"]
            .as_array()
            .context("events")?
            .iter()
            .filter(|e| e["user_written"] == true)
            .collect();
        assert_eq!(fake.len(), 1, "{style}");
        assert!(
            fake[0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("GPU reset begin!"))
        );
        assert_eq!(fake[0]["id"], serde_json::Value::Null);
        assert_eq!(fake[0]["class"], serde_json::Value::Null);
    }
    Ok(())
}

#[test]
fn the_catalogue_covers_every_rule() -> anyhow::Result<()> {
    let path = fixture("kmsg/catalogue.dmesg.log");
    let json = events_json(&path, &["--include-unclassified"])?;
    assert_golden(&path, &json)?;
    let seen: BTreeSet<String> = ids(&json).into_iter().collect();
    assert!(!seen.contains("-"), "a catalogue line was not classified");
    let rules = nodectl_agent::kmsg::Classifier::embedded()?;
    let all: BTreeSet<String> = rules.rules().iter().map(|r| r.id.to_string()).collect();
    let missing: Vec<&String> = all.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "rules without a catalogue line: {missing:?}"
    );
    Ok(())
}

#[test]
fn class_filter_stdin_and_bad_rules() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(fixture("kmsg/scenario.dmesg.log"))?;
    let run = nodectl_with(
        &[
            "events",
            "--file",
            "-",
            "--class",
            "reset,hang",
            "-o",
            "json",
        ],
        &[],
        Some(&text),
    )?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    let classes: BTreeSet<&str> = json["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["class"].as_str())
        .collect();
    assert_eq!(classes, BTreeSet::from(["hang", "reset"]));

    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.toml");
    let row = |id: &str, pattern: &str| {
        format!(
            "[[rule]]\nid = \"{id}\"\nseverity = \"info\"\ntitle = \"mine\"\nclass = \"info\"\npattern = '{pattern}'\nexample = 'amdgpu: hello world'\n"
        )
    };
    std::fs::write(&rules, format!("\n{}", row("broken_rule", "(x")))?;
    let rules_arg = rules.to_str().context("path")?;
    let run = nodectl_with(
        &["events", "--file", "-", "--rules", rules_arg],
        &[],
        Some("x\n"),
    )?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("rules.toml:2: rule `broken_rule`: bad pattern"),
        "{}",
        run.stderr
    );

    // A knowledge file's rule goes before the embedded ones, which still classify the rest.
    std::fs::write(&rules, row("my_line", "^hello"))?;
    let run = nodectl_with(
        &["events", "--file", "-", "--rules", rules_arg, "-o", "json"],
        &[],
        Some("[ 1.0] amdgpu: hello world\n[ 2.0] amdgpu: MES ring buffer is full.\n"),
    )?;
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(ids(&json), ["my_line", "mes_ring_full"]);
    let run = nodectl_with(
        &[
            "--knowledge",
            rules_arg,
            "events",
            "--file",
            "-",
            "-o",
            "json",
        ],
        &[],
        Some("[ 1.0] amdgpu: hello world\n"),
    )?;
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(ids(&json), ["my_line"]);
    Ok(())
}

/// journalctl prints no year: a journal across New Year keeps its times increasing, and the
/// incident that spans it ends after it begins.
#[test]
fn a_journal_across_new_year_keeps_its_times_increasing() -> anyhow::Result<()> {
    let log = "\
Dec 31 23:59:58 node1 kernel: amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE
Dec 31 23:59:59 node1 kernel: amdgpu 0000:c1:00.0: amdgpu: GPU reset begin!
Jan 01 00:00:01 node1 kernel: amdgpu 0000:c1:00.0: amdgpu: MODE2 reset
Jan 01 00:00:02 node1 kernel: amdgpu 0000:c1:00.0: amdgpu: GPU reset(1) succeeded!
";
    let times = |json: &serde_json::Value| -> Vec<String> {
        json["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["time"].as_str().unwrap_or("-").to_owned())
            .collect()
    };
    let run = nodectl_with(
        &["events", "--file", "-", "--year", "2025", "-o", "json"],
        &[],
        Some(log),
    )?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(
        times(&json),
        [
            "2025-12-31T23:59:58Z",
            "2025-12-31T23:59:59Z",
            "2026-01-01T00:00:01Z",
            "2026-01-01T00:00:02Z"
        ]
    );
    let incidents = json["incidents"].as_array().context("incidents")?;
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0]["first_time"], "2025-12-31T23:59:58Z");
    assert_eq!(incidents[0]["last_time"], "2026-01-01T00:00:02Z");
    assert_eq!(incidents[0]["recovered"], true);
    // The table says how long it lasted: seconds, not a negative year.
    let run = nodectl_with(&["events", "--file", "-", "--year", "2025"], &[], Some(log))?;
    assert!(run.stdout.contains("┆ 4.0 s ┆"), "{}", run.stdout);

    // Without --year: the first line is no later than tomorrow, and times still increase.
    let run = nodectl_with(&["events", "--file", "-", "-o", "json"], &[], Some(log))?;
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    let times = times(&json);
    let first: jiff::Timestamp = times[0].parse()?;
    let tomorrow = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(48))?;
    assert!(first < tomorrow, "{times:?}");
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    Ok(())
}

#[test]
fn the_reader_takes_the_boot_records_of_this_machine() -> anyhow::Result<()> {
    use nodectl_agent::kmsg::reader::{KmsgFile, KmsgReader, ReadOutcome};
    let file = KmsgFile::open(Path::new("/dev/kmsg")).context("/dev/kmsg (tests run as root)")?;
    let mut reader = KmsgReader::new(file);
    let mut seqs = Vec::new();
    loop {
        match reader.next_outcome()? {
            ReadOutcome::Record(r) => seqs.push(r.seq),
            ReadOutcome::Drained => break,
            _ => {}
        }
    }
    assert!(!seqs.is_empty(), "no record in the ring");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq not increasing");
    Ok(())
}

#[test]
fn a_follow_client_receives_a_written_record_as_user_written() -> anyhow::Result<()> {
    let agent = Agent::start(Path::new("/"), &["--full-kernel-log"])?;
    let (mut client, rx) = harness::nodectl_lines(&[
        "--endpoint",
        &agent.endpoint,
        "events",
        "--follow",
        "--include-unclassified",
        "-o",
        "json",
    ])?;
    // The header comes first: the stream is open.
    let header = rx.recv_timeout(Duration::from_secs(30))?;
    assert!(header.contains("\"header\""), "{header}");
    let tag = unique_tag("follow");
    write_kmsg(&format!(
        "{tag}: amdgpu 0000:c1:00.0: amdgpu: GPU reset begin!"
    ))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .context("tagged record not received within 10 s")?;
        if line.contains(&tag) {
            break line;
        }
    };
    let _ = client.kill();
    let _ = client.wait();
    let json: serde_json::Value = serde_json::from_str(&found)?;
    let event = &json["event"];
    assert_eq!(event["user_written"], true, "{found}");
    assert_eq!(event["facility"], 1);
    assert_eq!(event["class"], serde_json::Value::Null);
    assert_eq!(event["id"], serde_json::Value::Null);
    assert!(event["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(
        agent.terminate()?,
        "agent exits 0 on SIGTERM with a follow stream open"
    );
    Ok(())
}

fn tagged_seqs(endpoint: &str, since: u64) -> anyhow::Result<(Vec<u64>, Vec<String>)> {
    let since = since.to_string();
    let run = nodectl(&[
        "--endpoint",
        endpoint,
        "events",
        "--include-unclassified",
        "--since-seq",
        &since,
        "-o",
        "json",
    ])?;
    anyhow::ensure!(run.code == 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    let events = json["events"].as_array().context("events")?;
    let seqs = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    let messages = events
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    Ok((seqs, messages))
}

fn wait_for_tag(endpoint: &str, tag: &str) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (seqs, messages) = tagged_seqs(endpoint, 0)?;
        if let Some(i) = messages.iter().position(|m| m.contains(tag)) {
            return Ok(seqs[i]);
        }
        anyhow::ensure!(Instant::now() < deadline, "{tag} never reached the agent");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_restarted_agent_resumed_with_since_seq_delivers_every_record_once() -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let state_arg = state.path().to_str().context("path")?;
    let first_tag = unique_tag("before");
    let agent = Agent::start(
        Path::new("/"),
        &["--state-dir", state_arg, "--full-kernel-log"],
    )?;
    write_kmsg(&first_tag)?;
    let resume_from = wait_for_tag(&agent.endpoint, &first_tag)?;
    assert!(agent.terminate()?);
    let saved = std::fs::read_to_string(state.path().join("kmsg-state.json"))?;
    assert!(saved.contains("last_counted_seq"), "{saved}");

    let later: Vec<String> = (0..3)
        .map(|i| unique_tag(&format!("while-down-{i}")))
        .collect();
    for tag in &later {
        write_kmsg(tag)?;
    }
    let agent = Agent::start(
        Path::new("/"),
        &["--state-dir", state_arg, "--full-kernel-log"],
    )?;
    wait_for_tag(&agent.endpoint, &later[2])?;
    let (seqs, messages) = tagged_seqs(&agent.endpoint, resume_from)?;
    assert!(seqs.iter().all(|s| *s > resume_from));
    let expected: Vec<u64> = (resume_from + 1..=*seqs.last().context("no record")?).collect();
    assert_eq!(
        seqs, expected,
        "every record after since_seq exactly once, no gap"
    );
    for tag in &later {
        assert_eq!(
            messages.iter().filter(|m| m.contains(tag.as_str())).count(),
            1,
            "{tag}"
        );
    }
    assert!(!messages.iter().any(|m| m.contains(&first_tag)));
    Ok(())
}

#[test]
fn metrics_of_a_running_agent_pass_promtool() -> anyhow::Result<()> {
    let agent = Agent::start(Path::new("/"), &["--metrics-listen", "127.0.0.1:0"])?;
    let addr = agent
        .listener("metrics")
        .context("no metrics listener printed")?;
    let body = harness::http_get(addr, "/metrics")?;
    assert!(
        body.contains("# TYPE nodectl_kmsg_records_lost_total counter"),
        "{body}"
    );
    harness::promtool_check(&body)?;
    Ok(())
}

#[test]
fn without_dev_kmsg_the_agent_serves_snapshots_and_says_why_events_fail() -> anyhow::Result<()> {
    // Part of a host: its sys/ without a dev/kmsg.
    let root = tempfile::tempdir()?;
    std::fs::create_dir(root.path().join("sys"))?;
    let agent = Agent::start(root.path(), &[])?;
    let run = nodectl(&["--endpoint", &agent.endpoint, "events"])?;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("kernel log unavailable") && run.stderr.contains("/dev/kmsg"),
        "{}",
        run.stderr
    );
    let run = nodectl(&["--endpoint", &agent.endpoint, "node", "show", "-o", "json"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    Ok(())
}
