//! `nodectl diagnose` end to end: an agent over a hung-node tree with a CRI pod log, the same in-process, and a real process named llama-server with planted environment variables.

use std::time::Duration;

use nodectl_e2e::harness::{Agent, binary, nodectl, nodectl_json};
use nodectl_e2e::hung_node::{HungNode, PID, StopsIn};
use serde_json::Value;

fn ids<'a>(json: &'a Value, list: &str) -> Vec<&'a str> {
    json[list]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["id"].as_str()).collect())
        .unwrap_or_default()
}

/// `diagnose --pod POD -o json` through an agent over the hung node's tree.
fn through_an_agent(node: &HungNode, pod: &str) -> anyhow::Result<(i32, Value)> {
    let (_dir, root) = node.build()?;
    let agent = Agent::start(&root, &[])?;
    let endpoint = format!("http://{}", agent.listener("grpc").unwrap_or_default());
    let answer = nodectl_json(&[
        "diagnose",
        "--endpoint",
        &endpoint,
        "--pod",
        pod,
        "-o",
        "json",
    ]);
    agent.terminate()?;
    answer
}

#[test]
fn an_upload_stall_with_a_mes_hang_puts_hsa_enable_sdma_first() -> anyhow::Result<()> {
    let node = HungNode {
        stops_in: StopsIn::Upload,
        environ: vec![
            "PATH=/usr/bin".into(),
            "HSA_OVERRIDE_GFX_VERSION=11.5.1".into(),
            "API_TOKEN=secret".into(),
        ],
        stalled_for: Duration::from_secs(300),
    };
    let (code, json) = through_an_agent(&node, "llm/llama-0")?;
    assert_eq!(code, 1, "stalled is exit 1: {json:#}");
    assert_eq!(json["phase"], "upload", "{json:#}");
    assert_eq!(json["phase_confidence"], "high");
    assert_eq!(json["outcome"], "stalled");
    let stalled = json["stalled_for_s"].as_u64().unwrap_or(0);
    assert!((290..400).contains(&stalled), "stalled_for_s {stalled}");
    let incident = json["incidents"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["kind"] == "mes_hang_reset"))
        .unwrap_or_else(|| panic!("no mes_hang_reset incident: {json:#}"));
    assert_eq!(incident["after_last_line_s"], 12, "{incident:#}");
    let issues = ids(&json, "known_issues");
    assert_eq!(issues.first(), Some(&"sdma_upload_stall"), "{issues:?}");
    assert!(issues.contains(&"mes_hang_cwsr"), "{issues:?}");
    assert!(issues.contains(&"mes_firmware_0x83"), "{issues:?}");
    let strategies = ids(&json, "strategies");
    assert_eq!(
        strategies.first(),
        Some(&"hsa_enable_sdma_0"),
        "{strategies:?}"
    );
    assert!(strategies.contains(&"cwsr_disable"), "{strategies:?}");
    // The process the pod runs, with the allowlisted part of its environment only.
    assert_eq!(json["process"]["pid"], PID);
    assert_eq!(json["process"]["pod"], "llm/llama-0");
    assert_eq!(json["process"]["env"]["HSA_OVERRIDE_GFX_VERSION"], "11.5.1");
    assert_eq!(json["activity"], "blocked_in_kfd", "{:#}", json["process"]);
    let text = json.to_string();
    assert!(
        !text.contains("secret") && !text.contains("API_TOKEN"),
        "{text}"
    );
    Ok(())
}

#[test]
fn with_sdma_off_and_a_graph_reserve_stall_cwsr_is_proposed_not_sdma() -> anyhow::Result<()> {
    let node = HungNode {
        stops_in: StopsIn::GraphReserve,
        environ: vec!["HSA_ENABLE_SDMA=0".into()],
        stalled_for: Duration::from_secs(600),
    };
    let (code, json) = through_an_agent(&node, "llm/llama-0/server")?;
    assert_eq!(code, 1);
    assert_eq!(json["phase"], "graph_reserve", "{json:#}");
    assert_eq!(json["outcome"], "stalled");
    let strategies = ids(&json, "strategies");
    assert!(!strategies.contains(&"hsa_enable_sdma_0"), "{strategies:?}");
    assert!(strategies.contains(&"cwsr_disable"), "{strategies:?}");
    let left_out = json["already_in_effect"].to_string();
    assert!(
        left_out.contains("HSA_ENABLE_SDMA=0")
            || !ids(&json, "known_issues").contains(&"sdma_upload_stall")
    );
    Ok(())
}

#[test]
fn in_process_every_inference_process_is_diagnosed_with_its_pod_log() -> anyhow::Result<()> {
    let (_dir, root) = HungNode {
        stops_in: StopsIn::Upload,
        environ: vec!["HSA_ENABLE_SDMA=1".into()],
        stalled_for: Duration::from_secs(200),
    }
    .build()?;
    let root = root.to_string_lossy().into_owned();
    let (code, json) = nodectl_json(&["diagnose", "--host-root", &root, "-o", "json"])?;
    assert_eq!(code, 1, "{json:#}");
    let diagnoses = json["diagnoses"].as_array().cloned().unwrap_or_default();
    assert_eq!(diagnoses.len(), 1, "{json:#}");
    let d = &diagnoses[0];
    assert_eq!(d["phase"], "upload");
    assert_eq!(d["outcome"], "stalled");
    assert!(
        d["log_source"]["name"]
            .as_str()
            .unwrap_or("")
            .contains("llm/llama-0/server")
    );
    assert_eq!(ids(d, "strategies").first(), Some(&"hsa_enable_sdma_0"));

    // The table says the same in words.
    let run = nodectl(&["diagnose", "--host-root", &root])?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    for words in [
        "stalled in upload",
        "mes_hang_reset",
        "HSA_ENABLE_SDMA=0",
        "sdma_upload_stall",
    ] {
        assert!(run.stdout.contains(words), "{words}:\n{}", run.stdout);
    }
    Ok(())
}

#[test]
fn a_terse_log_takes_its_phase_evidence_from_the_node_and_asks_for_lv4() -> anyhow::Result<()> {
    let (_dir, root) = HungNode {
        stops_in: StopsIn::Terse,
        environ: vec!["HSA_ENABLE_SDMA=0".into()],
        stalled_for: Duration::from_secs(300),
    }
    .build()?;
    let root = root.to_string_lossy().into_owned();
    let (code, json) = nodectl_json(&[
        "diagnose",
        "--host-root",
        &root,
        "--pod",
        "llm/llama-0",
        "-o",
        "json",
    ])?;
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(json["outcome"], "stalled");
    assert_eq!(json["phase_confidence"], "medium", "{json:#}");
    let evidence = json["phase_evidence"].to_string();
    assert!(
        evidence.contains("default verbosity") && evidence.contains("/dev/kfd"),
        "{evidence}"
    );
    let strategies = ids(&json, "strategies");
    assert!(strategies.contains(&"log_verbosity_4"), "{strategies:?}");
    assert!(strategies.contains(&"cwsr_disable"), "{strategies:?}");
    Ok(())
}

#[test]
fn bad_inputs_are_exit_2_naming_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, "")?;
    let foreign = dir.path().join("foreign.log");
    std::fs::write(&foreign, "hello\nworld\n")?;
    let tree = nodectl_e2e::harness::node_fixture("no-gpu");
    let tree = tree.to_string_lossy();
    for (args, says) in [
        (vec!["--log", empty.to_str().unwrap_or("")], "is empty"),
        (
            vec!["--log", foreign.to_str().unwrap_or("")],
            "none of its 2 lines",
        ),
        (vec!["--log", "/nonexistent/x.log"], "/nonexistent/x.log"),
        (vec!["--pod", "llama-0"], "NAMESPACE/POD"),
        (vec!["--pod", "llm/../../etc"], "expected NAMESPACE/POD"),
        (vec!["--url", "localhost:8080"], "http://HOST:PORT"),
        (vec!["--stall-after", "soon"], "soon"),
    ] {
        let mut full = vec!["diagnose", "--host-root", &tree];
        full.extend(args.iter().copied());
        let run = nodectl(&full)?;
        assert_eq!(run.code, 2, "{full:?}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{full:?}: {}", run.stderr);
    }
    // A pod the node does not have: the agent's NOT_FOUND, said as such.
    let run = nodectl(&["diagnose", "--host-root", &tree, "--pod", "llm/nope"])?;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("no log directory for pod llm/nope"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[test]
fn a_compose_log_of_several_services_says_which_service_it_read() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("compose.log");
    std::fs::write(
        &log,
        "\
open-webui   | INFO:     Started server process [1]
llama-cpp    | 0.00.010.000 I build_info: b9100-2e95c5f96
llama-embed  | 0.00.020.000 I load_tensors: loading model tensors, this can take a while... (mmap = true)
llama-cpp    | 0.00.900.000 I srv  llama_server: server is listening on http://0.0.0.0:8080
open-webui   | Segmentation fault (core dumped)
",
    )?;
    let tree = nodectl_e2e::harness::node_fixture("no-gpu");
    let tree = tree.to_string_lossy();
    let run = nodectl(&[
        "diagnose",
        "--host-root",
        &tree,
        "--log",
        &log.to_string_lossy(),
    ])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("verdict: ready"), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "read as compose service llama-cpp's run: 2 lines of llama-embed, open-webui left out"
        ),
        "{}",
        run.stdout
    );
    Ok(())
}

/// A process that is `llama-server` by name (a copy of `sleep`), with planted variables.
struct PlantedProcess {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl PlantedProcess {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let exe = dir.path().join("llama-server");
        std::fs::copy("/bin/sleep", &exe)?;
        // Another test thread forking while the copy was open for writing keeps it open in
        // that child for a moment: exec then fails with "text file busy"; try again.
        let mut attempts = 0;
        let child = loop {
            match std::process::Command::new(&exe)
                .arg("300")
                .env("HSA_ENABLE_SDMA", "0")
                .env("API_TOKEN", "secret")
                .spawn()
            {
                Err(e) if e.raw_os_error() == Some(26) && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        // The kernel sets comm at exec; wait until /proc shows the new program.
        let comm = format!("/proc/{}/comm", child.id());
        for _ in 0..100 {
            if std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "llama-server") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { child, _dir: dir })
    }
}

impl Drop for PlantedProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_planted(json: &Value, pid: u32) -> anyhow::Result<Value> {
    json["diagnoses"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["process"]["pid"] == pid))
        .map(|d| d["process"].clone())
        .ok_or_else(|| anyhow::anyhow!("process {pid} not found: {json:#}"))
}

#[test]
fn a_planted_process_shows_the_allowlisted_variable_and_never_the_token() -> anyhow::Result<()> {
    binary("nodectl-agent")?;
    let planted = PlantedProcess::start()?;
    let pid = planted.child.id();

    let run = nodectl(&["diagnose", "-o", "json"])?;
    let json: Value = serde_json::from_str(&run.stdout)?;
    let process = find_planted(&json, pid)?;
    assert_eq!(process["program"], "llama-server");
    assert_eq!(process["env"]["HSA_ENABLE_SDMA"], "0");
    assert!(!run.stdout.contains("secret") && !run.stdout.contains("API_TOKEN"));

    let agent = Agent::start(std::path::Path::new("/"), &[])?;
    let endpoint = format!("http://{}", agent.listener("grpc").unwrap_or_default());
    let run = nodectl(&["diagnose", "--endpoint", &endpoint, "-o", "json"])?;
    let json: Value = serde_json::from_str(&run.stdout)?;
    let process = find_planted(&json, pid)?;
    assert_eq!(process["env"]["HSA_ENABLE_SDMA"], "0");
    assert_eq!(
        process["env"].as_object().map(|o| o.len()),
        Some(1),
        "{process:#}"
    );
    assert!(!run.stdout.contains("secret") && !run.stdout.contains("API_TOKEN"));
    // The snapshot carries the processes too, filtered the same way.
    let run = nodectl(&["node", "show", "--endpoint", &endpoint, "-o", "json"])?;
    assert!(run.stdout.contains("\"HSA_ENABLE_SDMA\""), "{}", run.stderr);
    assert!(!run.stdout.contains("secret") && !run.stdout.contains("API_TOKEN"));
    agent.terminate()?;
    Ok(())
}
