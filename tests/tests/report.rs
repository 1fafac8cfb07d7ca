//! `nodectl report` end to end: bundles of every fixture node and of a hung node, in-process and through an agent, unpacked with the system's tar and replayed with `--host-root`; planted secrets in no byte of them; complete when parts fail or the agent dies; encrypted to an age recipient.

#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nodectl_e2e::harness::{self, Agent, node_fixture, nodectl};
use nodectl_e2e::hung_node::{HungNode, PID, POD_UID, StopsIn};
use serde_json::Value;
use sha2::Digest as _;

const FIXTURE_NODES: [&str; 4] = [
    "no-gpu",
    "strix-halo-healthy",
    "strix-halo-mes83",
    "strix-halo-risky",
];

const NO_TALOS: [(&str, &str); 2] = [
    ("HOME", "/nonexistent/nodectl-tests"),
    ("TALOS_HOME", "/nonexistent/nodectl-tests"),
];

/// Writes a bundle with `nodectl report ARGS --out DIR/bundle.tar.gz`; its path and the run.
fn report(dir: &Path, args: &[&str]) -> anyhow::Result<(PathBuf, harness::Run)> {
    let out = dir.join("bundle.tar.gz");
    let mut all: Vec<&str> = vec!["report"];
    all.extend_from_slice(args);
    let out_text = out.display().to_string();
    all.extend_from_slice(&["--out", &out_text]);
    // HOME and TALOS_HOME point nowhere: no talosconfig of the machine running the tests leaks in.
    let run = harness::nodectl_with(&all, &NO_TALOS, None)?;
    anyhow::ensure!(
        run.code == 0,
        "report {args:?}: exit {}\n{}\n{}",
        run.code,
        run.stdout,
        run.stderr
    );
    Ok((out, run))
}

/// Unpacks with the system's `tar -xzf`, as a maintainer would.
fn unpack(bundle: &Path) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(bundle)
        .arg("-C")
        .arg(dir.path())
        .stdin(Stdio::null())
        .status()
        .context("running tar")?;
    anyhow::ensure!(status.success(), "tar -xzf {} failed", bundle.display());
    Ok(dir)
}

/// Every regular file under `dir` (links not followed), with its bytes.
fn files(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                out.push((entry.path(), std::fs::read(entry.path())?));
            } else if kind.is_symlink() {
                // The link's target is bytes of the bundle too.
                let target = std::fs::read_link(entry.path())?;
                out.push((
                    entry.path(),
                    target.to_string_lossy().into_owned().into_bytes(),
                ));
            }
        }
    }
    Ok(out)
}

/// Every file MANIFEST names has that sha256, and every regular file is named.
fn check_manifest(dir: &Path) -> anyhow::Result<()> {
    let manifest = std::fs::read_to_string(dir.join("MANIFEST"))?;
    let mut named = std::collections::BTreeSet::new();
    for line in manifest.lines() {
        let (digest, path) = line.split_once("  ").context("MANIFEST line")?;
        let bytes = std::fs::read(dir.join(path)).with_context(|| path.to_owned())?;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            digest,
            "MANIFEST: {path}"
        );
        named.insert(path.to_owned());
    }
    for (path, _) in files(dir)? {
        if std::fs::symlink_metadata(&path)?.is_file() {
            let relative = path.strip_prefix(dir)?.display().to_string();
            assert!(
                relative == "MANIFEST" || named.contains(&relative),
                "{relative} not in MANIFEST"
            );
        }
    }
    Ok(())
}

/// A document with what names its source or its moment taken out: the node's label and tree,
/// the time it was read, and UUIDs (a bundle replaces each by a stand-in, the same everywhere).
fn normalized(mut json: Value, sources: &[&str]) -> Value {
    fn walk(value: &mut Value, sources: &[&str], uuid: &regex::Regex) {
        match value {
            Value::Object(map) => {
                for key in ["taken_at", "made_at", "node", "source", "selection"] {
                    if map.contains_key(key) {
                        map.insert(key.to_owned(), Value::Null);
                    }
                }
                map.values_mut().for_each(|v| walk(v, sources, uuid));
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, sources, uuid)),
            Value::String(text) => {
                let mut replaced = text.clone();
                for source in sources {
                    replaced = replaced.replace(source, "<source>");
                }
                *text = uuid.replace_all(&replaced, "<uuid>").into_owned();
            }
            _ => {}
        }
    }
    let uuid = regex::Regex::new(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    )
    .expect("a valid pattern");
    walk(&mut json, sources, &uuid);
    json
}

/// `nodectl COMMAND -o json` on the source and on the replay give the same document.
fn assert_replays(
    source: &[&str],
    replay: &Path,
    command: &[&str],
    sources: &[&str],
) -> anyhow::Result<()> {
    let replay_root = replay.display().to_string();
    let mut on_source: Vec<&str> = source.to_vec();
    on_source.extend_from_slice(command);
    on_source.extend_from_slice(&["-o", "json"]);
    let mut on_replay: Vec<&str> = vec!["--host-root", &replay_root];
    on_replay.extend_from_slice(command);
    on_replay.extend_from_slice(&["-o", "json"]);
    let (run_a, run_b) = (nodectl(&on_source)?, nodectl(&on_replay)?);
    let mut all_sources: Vec<&str> = sources.to_vec();
    all_sources.push(&replay_root);
    assert_eq!(
        run_a.code, run_b.code,
        "{command:?}: exit codes\n{}\n{}",
        run_a.stderr, run_b.stderr
    );
    let (Ok(a), Ok(b)) = (
        serde_json::from_str::<Value>(&run_a.stdout),
        serde_json::from_str::<Value>(&run_b.stdout),
    ) else {
        // No document (the source cannot answer, as events on a tree without a kernel log):
        // the same error.
        let error = |text: &str| text.lines().last().unwrap_or_default().to_owned();
        assert_eq!(error(&run_a.stderr), error(&run_b.stderr), "{command:?}");
        return Ok(());
    };
    let (a, b) = (normalized(a, &all_sources), normalized(b, &all_sources));
    if a != b {
        let diff = similar::TextDiff::from_lines(
            &serde_json::to_string_pretty(&a)?,
            &serde_json::to_string_pretty(&b)?,
        )
        .unified_diff()
        .header("source", "replay")
        .to_string();
        panic!("{command:?} differs on the replay of {source:?}:\n{diff}");
    }
    Ok(())
}

/// report.md with what changes from run to run (times, durations, paths) masked.
fn masked_report_md(text: &str, paths: &[&str]) -> anyhow::Result<String> {
    let mut out = text.to_owned();
    out = out.replace(
        &harness::binary("nodectl")?.display().to_string(),
        "nodectl",
    );
    for path in paths {
        out = out.replace(path, "<path>");
    }
    let time = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")?;
    // The last column of the sections table: how long each took.
    let ms = regex::Regex::new(r"(?m)^(\|[^|\n]*\|[^|\n]*\|[^|\n]*\| )\d+ \|$")?;
    let version = regex::Regex::new(r"by nodectl \S+,")?;
    let out = time.replace_all(&out, "<time>");
    let out = ms.replace_all(&out, "${1}<ms> |");
    Ok(version
        .replace_all(&out, "by nodectl <version>,")
        .into_owned())
}

#[test]
fn a_bundle_of_each_fixture_node_replays_as_the_node() -> anyhow::Result<()> {
    for name in FIXTURE_NODES {
        let root = node_fixture(name);
        let root_text = root.display().to_string();
        let work = tempfile::tempdir()?;
        let (bundle, _) = report(work.path(), &["--host-root", &root_text])?;
        let unpacked = unpack(&bundle)?;
        check_manifest(unpacked.path())?;
        let json: Value =
            serde_json::from_slice(&std::fs::read(unpacked.path().join("report.json"))?)?;
        assert_eq!(json["format"], "nodectl-report/1", "{name}");
        let sections: Vec<&str> = json["sections"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| s["name"].as_str()).collect())
            .unwrap_or_default();
        for expected in [
            "node",
            "node: snapshot",
            "node: kernel-log",
            "node: processes",
            "diagnosis",
        ] {
            assert!(
                sections.contains(&expected),
                "{name}: {expected} not in {sections:?}"
            );
        }
        let host = unpacked.path().join("host");
        let source = ["--host-root", root_text.as_str()];
        for command in [
            &["node", "check"][..],
            &["node", "show"],
            &["events"],
            &["diagnose"],
        ] {
            assert_replays(&source, &host, command, &[&root_text])?;
        }
        let md = std::fs::read_to_string(unpacked.path().join("report.md"))?;
        assert!(
            md.chars().count() < 65_536,
            "{name}: report.md too long for GitHub"
        );
        let masked = masked_report_md(&md, &[&bundle.display().to_string(), &root_text])?;
        let golden = harness::fixture(&format!("reports/{name}.report.md"));
        harness::assert_golden_text(&golden, &masked)?;

        // Through an agent on the same tree: the same report, but for how it was reached.
        let agent = Agent::start(&root, &[])?;
        let through = tempfile::tempdir()?;
        let (bundle, _) = report(through.path(), &["--endpoint", &agent.endpoint])?;
        let endpoint = agent.endpoint.clone();
        agent.terminate()?;
        let unpacked = unpack(&bundle)?;
        check_manifest(unpacked.path())?;
        let md = std::fs::read_to_string(unpacked.path().join("report.md"))?;
        let masked = masked_report_md(&md, &[&bundle.display().to_string(), &endpoint])?
            .replace("--endpoint <path>", "--host-root <path>");
        assert_eq!(
            masked,
            std::fs::read_to_string(&golden)?,
            "{name}: report.md through an agent"
        );
    }
    Ok(())
}

const API_KEY: &str = "sk-reportS3CRETapikey0123456789abcdefghijk";
const HF_TOKEN: &str = "hf_reportS3CRETtokenABCDEFGHIJKLMNOPQRS";
const ENV_API_KEY: &str = "EnvApiKeyReportS3CRET42";
const ENV_OTHER_TOKEN: &str = "OtherServiceReportS3CRET";
const JOIN_TOKEN: &str = "JoinTokenReportS3CRET0123";
const KMSG_TOKEN: &str = "ghp_kmsgReportS3CRET0123456789abcdefghijklmn";
const POD_LOG_TOKEN: &str = "hf_podlogReportS3CRETtokenABCDEFGHIJKLMN";
const LOG_FILE_KEY: &str = "sk-logfileReportS3CRETkey0123456789abcdefgh";
const BEARER: &str = "BearerReportS3CRETvalue99";
const MAC: &str = "3c:ec:ef:5e:c4:e7";
const IP_ARG: &str = "10.23.45.67::10.23.45.1:255.255.255.0:gpu-node-7:eth0:off";

const SECRETS: [&str; 10] = [
    API_KEY,
    HF_TOKEN,
    ENV_API_KEY,
    ENV_OTHER_TOKEN,
    JOIN_TOKEN,
    KMSG_TOKEN,
    POD_LOG_TOKEN,
    LOG_FILE_KEY,
    BEARER,
    MAC,
];

/// The hung node (a llama-server stalled in its upload, its CRI pod log, a MES hang in the
/// kernel log), with a secret of every kind planted: arguments, environment, the kernel command
/// line, a kernel log line, the pod log. Returns the tree and a llama.cpp log with a key in it.
fn node_with_secrets(dir: &Path) -> anyhow::Result<(tempfile::TempDir, PathBuf, PathBuf)> {
    let (tree, root) = HungNode {
        stops_in: StopsIn::Upload,
        environ: vec![
            "PATH=/usr/bin".into(),
            "HSA_ENABLE_SDMA=0".into(),
            format!("LLAMA_ARG_API_KEY={ENV_API_KEY}"),
            format!("OTHER_SERVICE_TOKEN={ENV_OTHER_TOKEN}"),
        ],
        stalled_for: Duration::from_secs(300),
    }
    .build()?;
    let args = [
        "/app/llama-server",
        "-m",
        "/models/Qwen3-30B-A3B-Q4_K_M.gguf",
        "-ngl",
        "999",
        "--api-key",
        API_KEY,
        "--hf-token",
        HF_TOKEN,
    ];
    std::fs::write(
        root.join(format!("proc/{PID}/cmdline")),
        format!("{}\0", args.join("\0")),
    )?;
    let cmdline = std::fs::read_to_string(root.join("proc/cmdline"))?;
    std::fs::write(
        root.join("proc/cmdline"),
        format!(
            "{} siderolink.api=https://omni.example.org:8090/?jointoken={JOIN_TOKEN} ip={IP_ARG}\n",
            cmdline.trim_end()
        ),
    )?;
    let kmsg = root.join("dev/kmsg");
    let mut records = std::fs::read_to_string(&kmsg)?;
    let last_seq = records
        .lines()
        .filter_map(|l| l.split(',').nth(1)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    records.push_str(&format!(
        "6,{},1000000,-;r8169 0000:01:00.0 eth0: link up, mac {MAC}, token {KMSG_TOKEN}\n",
        last_seq + 1
    ));
    std::fs::write(&kmsg, records)?;
    let pod_log = root.join(format!("var/log/pods/llm_llama-0_{POD_UID}/server/0.log"));
    let modified = std::fs::metadata(&pod_log)?.modified()?;
    let mut text = std::fs::read_to_string(&pod_log)?;
    let first_stamp = text.split(' ').next().unwrap_or_default().to_owned();
    text = format!(
        "{first_stamp} stderr F common_download_file: using HF_TOKEN={POD_LOG_TOKEN}\n{text}"
    );
    std::fs::write(&pod_log, text)?;
    std::fs::File::options()
        .write(true)
        .open(&pod_log)?
        .set_modified(modified)?;
    let log = dir.join("llama-server.log");
    std::fs::write(
        &log,
        format!(
            "main: server is listening on http://0.0.0.0:8080 with api key {LOG_FILE_KEY}\nsrv  log_server_r: Authorization: Bearer {BEARER}\n"
        ),
    )?;
    Ok((tree, root, log))
}

fn assert_no_secret_in(dir: &Path) -> anyhow::Result<()> {
    let all = files(dir)?;
    assert!(!all.is_empty());
    for (path, bytes) in all {
        let text = String::from_utf8_lossy(&bytes);
        for secret in SECRETS.iter().chain([&IP_ARG]) {
            assert!(!text.contains(secret), "{} holds {secret}", path.display());
        }
        let name = path.display().to_string();
        for secret in SECRETS {
            assert!(!name.contains(secret), "a path holds {secret}: {name}");
        }
    }
    Ok(())
}

/// The redaction counts of report.json, by kind.
fn redactions(unpacked: &Path) -> anyhow::Result<Value> {
    let json: Value = serde_json::from_slice(&std::fs::read(unpacked.join("report.json"))?)?;
    Ok(json["redactions"].clone())
}

fn check_redacted_bundle(unpacked: &Path) -> anyhow::Result<()> {
    check_manifest(unpacked)?;
    assert_no_secret_in(unpacked)?;
    let counts = redactions(unpacked)?;
    for kind in [
        "api-key",
        "hf-token",
        "github-token",
        "url-query",
        "host-identity",
        "mac-address",
        "uuid",
        "bearer-token",
    ] {
        assert!(
            counts[kind].as_u64().unwrap_or(0) >= 1,
            "{kind} not counted: {counts:#}"
        );
    }
    // The secret variable that is no allowlisted one was redacted in the raw environ file.
    let environ = std::fs::read(unpacked.join(format!("host/proc/{PID}/environ")))?;
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("OTHER_SERVICE_TOKEN=<redacted:token>"),
        "{environ}"
    );
    assert!(environ.contains("HSA_ENABLE_SDMA=0"), "{environ}");
    let md = std::fs::read_to_string(unpacked.join("report.md"))?;
    assert!(md.contains("| api-key |"), "{md}");
    Ok(())
}

#[test]
fn secrets_of_every_kind_stay_out_of_a_bundle_taken_in_process() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let (_tree, root, log) = node_with_secrets(work.path())?;
    let root_text = root.display().to_string();
    let log_text = log.display().to_string();
    let (bundle, run) = report(
        work.path(),
        &[
            "--host-root",
            &root_text,
            "--log",
            &log_text,
            "--pod",
            "llm/llama-0",
        ],
    )?;
    for secret in SECRETS {
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
    }
    let unpacked = unpack(&bundle)?;
    check_redacted_bundle(unpacked.path())?;
    // The llama.cpp log is in the bundle, redacted, and the diagnosis read it.
    let kept_log = std::fs::read_to_string(unpacked.path().join("logs/llama-server.log"))?;
    assert!(kept_log.contains("<redacted:api-key>"), "{kept_log}");
    let diagnosis: Value =
        serde_json::from_slice(&std::fs::read(unpacked.path().join("diagnosis.json"))?)?;
    assert!(diagnosis.get("verdict").is_some(), "{diagnosis:#}");

    // The replay: the same check, events and diagnosis of the pod as the tree gives.
    let host = unpacked.path().join("host");
    let source = ["--host-root", root_text.as_str()];
    for command in [
        &["node", "check"][..],
        &["events"],
        &["diagnose", "--pod", "llm/llama-0"],
    ] {
        assert_replays(&source, &host, command, &[&root_text])?;
    }
    Ok(())
}

#[test]
fn through_an_agent_the_bundle_and_the_stream_carry_no_secret() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let (_tree, root, log) = node_with_secrets(work.path())?;
    // The whole kernel log, so the redaction of every record is what is checked.
    let agent = Agent::start(&root, &["--full-kernel-log"])?;
    let endpoint = agent.endpoint.clone();
    let log_text = log.display().to_string();
    let (bundle, _) = report(work.path(), &["--endpoint", &endpoint, "--log", &log_text])?;
    let unpacked = unpack(&bundle)?;
    check_redacted_bundle(unpacked.path())?;
    let json: Value = serde_json::from_slice(&std::fs::read(unpacked.path().join("report.json"))?)?;
    let pod_logs = json["sections"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "node: pod-logs"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(pod_logs["status"], "ok", "{pod_logs:#}");

    // What crossed the wire, decompressed: no secret either.
    let raw = tokio::runtime::Runtime::new()?.block_on(async {
        use nodectl_proto::nodectl::v1 as pb;
        let mut client =
            pb::node_diagnostics_client::NodeDiagnosticsClient::connect(endpoint.clone()).await?;
        let mut stream = client
            .get_report(pb::GetReportRequest::default())
            .await?
            .into_inner();
        let mut raw = Vec::new();
        while let Some(chunk) = stream.message().await? {
            raw.extend_from_slice(&chunk.data);
        }
        // An agent reached over the network never leaves secrets in.
        let refused = client
            .get_report(pb::GetReportRequest {
                no_redact: true,
                ..Default::default()
            })
            .await
            .err()
            .map(|s| s.code());
        anyhow::ensure!(
            refused == Some(tonic::Code::PermissionDenied),
            "no_redact through an agent: {refused:?}"
        );
        anyhow::Ok(raw)
    })?;
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(raw.as_slice()), &mut tar)?;
    let text = String::from_utf8_lossy(&tar);
    for secret in SECRETS {
        assert!(!text.contains(secret), "the stream holds {secret}");
    }
    assert!(text.contains("node/sections.json"));
    agent.terminate()?;
    Ok(())
}

#[test]
fn failing_parts_are_recorded_and_safe_mode_reads_no_debugfs() -> anyhow::Result<()> {
    use nodectl_e2e::stalled_file::StalledFile;
    if !Path::new("/dev/fuse").exists() {
        harness::outside_program_missing("/dev/fuse");
        return Ok(());
    }
    let dir = harness::node_fixture_copy("strix-halo-risky")?;
    let root = dir.path().join("root");
    let device = root.join("sys/class/drm/card1/device");
    // A file that errors: a directory where a kernel attribute should be.
    let sclk = device.join("pp_dpm_sclk");
    std::fs::remove_file(&sclk)?;
    std::fs::create_dir(&sclk)?;
    // A read that never returns, and a debugfs file that would hang if it were read.
    let stalled = StalledFile::mount_over(&device.join("gpu_busy_percent"))?;
    let debugfs = root.join("sys/kernel/debug/dri/1");
    std::fs::create_dir_all(&debugfs)?;
    std::fs::write(
        debugfs.join("amdgpu_firmware_info"),
        "VCE feature version: 0\n",
    )?;
    let debug_stalled = StalledFile::mount_over(&debugfs.join("amdgpu_firmware_info"))?;

    let work = tempfile::tempdir()?;
    let bundle = work.path().join("bundle.tar.gz");
    // Spawned, not waited for: a thread left in the stalled read keeps the process from being
    // reaped until the read is released; its main thread ends (and the bundle is written) before.
    let mut child = Command::new(harness::binary("nodectl")?)
        .args(["report", "--safe-mode", "--host-root"])
        .arg(&root)
        .arg("--out")
        .arg(&bundle)
        .env("XDG_DATA_HOME", "/nonexistent/nodectl-tests")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let ended = harness::main_thread_ends_within(child.id(), Duration::from_secs(120));
    stalled.release();
    debug_stalled.release();
    let status = child.wait()?;
    assert!(ended, "nodectl report did not end while a read hung");
    assert!(status.success(), "nodectl report: {status}");
    let unpacked = unpack(&bundle)?;
    check_manifest(unpacked.path())?;
    assert!(stalled.reads_started() > 0, "the stalled file was read");
    assert_eq!(debug_stalled.reads_started(), 0, "safe mode read debugfs");
    let reads = std::fs::read_to_string(unpacked.path().join("node/reads.tsv"))?;
    for line in reads.lines().filter(|l| l.starts_with("/sys/kernel/debug")) {
        assert!(line.contains("\trefused\t"), "safe mode: {line}");
    }
    assert!(
        reads.lines().any(|l| l.starts_with("/sys/kernel/debug")),
        "no debugfs read asked for:\n{reads}"
    );
    let failed = |name: &str| {
        reads
            .lines()
            .any(|l| l.contains(name) && l.contains("\tfailed\t"))
    };
    assert!(
        failed("pp_dpm_sclk") && failed("gpu_busy_percent"),
        "{reads}"
    );
    let snapshot: Value =
        serde_json::from_slice(&std::fs::read(unpacked.path().join("node/snapshot.json"))?)?;
    let problems = snapshot["problems"].to_string();
    assert!(
        problems.contains("pp_dpm_sclk") && problems.contains("gpu_busy_percent"),
        "{problems}"
    );
    let json: Value = serde_json::from_slice(&std::fs::read(unpacked.path().join("report.json"))?)?;
    assert_eq!(json["safe_mode"], true);
    Ok(())
}

#[test]
fn an_agent_killed_mid_report_still_gives_a_bundle() -> anyhow::Result<()> {
    use nodectl_e2e::stalled_file::StalledFile;
    if !Path::new("/dev/fuse").exists() {
        harness::outside_program_missing("/dev/fuse");
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    let (_tree, root, _) = node_with_secrets(work.path())?;
    // The pod log's read never returns: the agent is in the last section when it dies.
    let pod_log = root.join(format!("var/log/pods/llm_llama-0_{POD_UID}/server/0.log"));
    let stalled = StalledFile::mount_over(&pod_log)?;
    let mut agent = Agent::start(&root, &[])?;
    let out = work.path().join("cut.tar.gz");
    let client = Command::new(harness::binary("nodectl")?)
        .args(["report", "--endpoint", &agent.endpoint, "--out"])
        .arg(&out)
        .env("XDG_DATA_HOME", "/nonexistent/nodectl-tests")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let waited = std::time::Instant::now();
    while stalled.reads_started() == 0 && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        stalled.reads_started() > 0,
        "the report never reached the pod log"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(agent.pid())?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    // The killed agent's thread in the stalled read holds its sockets until the read ends; a
    // killed process on a real node closes them at once.
    stalled.release();
    let _ = agent.wait_exit();
    let output = client.wait_with_output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let unpacked = unpack(&out)?;
    check_manifest(unpacked.path())?;
    // Without --full-kernel-log the agent keeps only the GPU stack's records, each other one a
    // stand-in with its sequence number (a gap would read as records lost).
    let kmsg = std::fs::read_to_string(unpacked.path().join("host/dev/kmsg"))?;
    assert!(kmsg.contains(";<left out: not the GPU stack's"), "{kmsg}");
    assert!(!kmsg.contains("r8169") && kmsg.contains("amdgpu"), "{kmsg}");
    for kept in [
        "node/snapshot.json",
        "node/kernel.json",
        "node/processes.json",
        "report.md",
    ] {
        assert!(unpacked.path().join(kept).is_file(), "{kept} missing");
    }
    let json: Value = serde_json::from_slice(&std::fs::read(unpacked.path().join("report.json"))?)?;
    let node = json["sections"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "node"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(node["status"], "error", "{node:#}");
    Ok(())
}

#[test]
fn an_encrypted_bundle_opens_with_the_matching_identity() -> anyhow::Result<()> {
    use std::io::Read as _;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let work = tempfile::tempdir()?;
    let root = node_fixture("strix-halo-healthy").display().to_string();
    let out = work.path().join("b.tar.gz.age");
    let out_text = out.display().to_string();
    let run = nodectl(&[
        "report",
        "--host-root",
        &root,
        "--encrypt-to",
        &recipient,
        "--out",
        &out_text,
    ])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let encrypted = std::fs::read(&out)?;
    assert!(encrypted.starts_with(b"age-encryption.org/v1"));
    let decryptor = age::Decryptor::new(encrypted.as_slice())?;
    let mut plain = Vec::new();
    decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))?
        .read_to_end(&mut plain)?;
    let plain_path = work.path().join("b.tar.gz");
    std::fs::write(&plain_path, plain)?;
    let unpacked = unpack(&plain_path)?;
    check_manifest(unpacked.path())?;
    // Another identity does not open it.
    let other = age::x25519::Identity::generate();
    let decryptor = age::Decryptor::new(encrypted.as_slice())?;
    assert!(
        decryptor
            .decrypt(std::iter::once(&other as &dyn age::Identity))
            .is_err()
    );
    // A recipient that is not one is an input error before anything is read.
    let bad = nodectl(&[
        "report",
        "--host-root",
        &root,
        "--encrypt-to",
        "age1nope",
        "--out",
        &out_text,
    ])?;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talos_facts_come_with_the_machine_config_secrets_replaced() -> anyhow::Result<()> {
    use nodectl_e2e::fake_talos::{FakeTalos, Role, Scenario};
    let fake = FakeTalos::start(Scenario::uki()).await?;
    let talosconfig = fake.talosconfig(Role::Admin)?;
    let work = tempfile::tempdir()?;
    let root = node_fixture("strix-halo-risky").display().to_string();
    let dir = work.path().to_path_buf();
    let config = talosconfig.display().to_string();
    let (bundle, _) = tokio::task::spawn_blocking(move || {
        report(&dir, &["--host-root", &root, "--talosconfig", &config])
    })
    .await??;
    let unpacked = unpack(&bundle)?;
    check_manifest(unpacked.path())?;
    let facts: Value =
        serde_json::from_slice(&std::fs::read(unpacked.path().join("talos/facts.json"))?)?;
    assert_eq!(facts["talos_version"], "v1.12.1", "{facts:#}");
    assert_eq!(facts["boot_path"], "uki", "{facts:#}");
    assert!(facts["schematic_id"].is_string(), "{facts:#}");
    let config = std::fs::read_to_string(unpacked.path().join("talos/machine-config.yaml"))?;
    for secret in [
        "7k3xqf.0b1c2d3e4f5a6b7c",
        "4f7d2a.9b8c7d6e5f4a3b2c",
        "9q8w7e6r5t4y3u2i1o0pAsDfGhJkLzXcVbNm1234567=",
    ] {
        for (path, bytes) in files(unpacked.path())? {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{} holds {secret}",
                path.display()
            );
        }
    }
    assert!(
        config.contains("<REDACTED>") && config.contains("clusterName: strix"),
        "{config}"
    );
    let md = std::fs::read_to_string(unpacked.path().join("report.md"))?;
    assert!(md.contains("| talos | ok |"), "{md}");
    // machine.token, cluster.secret, cluster.token (the keys of the fake's CAs are empty).
    assert!(
        redactions(unpacked.path())?["machine-config-secret"].as_u64() >= Some(3),
        "{md}"
    );
    Ok(())
}

/// With `amdgpu.mes_log_enable=1` the MES keeps an event log in debugfs: the bundle holds the
/// file and says whether it advanced between two reads a second apart (a log that stops while a
/// run is stalled is the MES's own trace of a silent hang).
#[test]
fn the_mes_event_log_is_kept_and_read_twice() -> anyhow::Result<()> {
    let tree = harness::node_fixture_copy("strix-halo-mes83")?;
    let root = tree.path().join("root");
    let log = root.join("sys/kernel/debug/dri/1/amdgpu_mes_event_log");
    std::fs::write(&log, "00000000 00000001 00000002 00000003\n")?;
    let root_text = root.display().to_string();
    let section = |unpacked: &Path| -> anyhow::Result<Value> {
        let sections: Value =
            serde_json::from_slice(&std::fs::read(unpacked.join("node/sections.json"))?)?;
        sections["sections"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == "mes-event-log")
            .cloned()
            .context("no mes-event-log section")
    };

    // Still: kept, not advanced.
    let work = tempfile::tempdir()?;
    let (bundle, _) = report(work.path(), &["--host-root", &root_text])?;
    let unpacked = unpack(&bundle)?;
    assert_eq!(section(unpacked.path())?["status"], "ok");
    let logs: Value = serde_json::from_slice(&std::fs::read(
        unpacked.path().join("node/mes-event-log.json"),
    )?)?;
    assert_eq!(
        logs[0]["path"], "/sys/kernel/debug/dri/1/amdgpu_mes_event_log",
        "{logs}"
    );
    assert_eq!(logs[0]["advanced"], false, "{logs}");
    assert!(
        unpacked
            .path()
            .join("host/sys/kernel/debug/dri/1/amdgpu_mes_event_log")
            .is_file()
    );

    // Written to while the bundle is taken: advanced.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        let log = log.clone();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let _ = std::fs::write(&log, format!("{n:08x} 00000001\n"));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let work = tempfile::tempdir()?;
    let taken = report(work.path(), &["--host-root", &root_text]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().ok();
    let unpacked = unpack(&taken?.0)?;
    let logs: Value = serde_json::from_slice(&std::fs::read(
        unpacked.path().join("node/mes-event-log.json"),
    )?)?;
    assert_eq!(logs[0]["advanced"], true, "{logs}");

    // Without it (mes_log_enable=0): skipped, saying why.
    std::fs::remove_file(&log)?;
    let work = tempfile::tempdir()?;
    let (bundle, _) = report(work.path(), &["--host-root", &root_text])?;
    let skipped = section(unpack(&bundle)?.path())?;
    assert_eq!(skipped["status"], "skipped");
    assert!(
        skipped["reason"]
            .as_str()
            .is_some_and(|r| r.contains("amdgpu.mes_log_enable=1")),
        "{skipped}"
    );
    Ok(())
}
