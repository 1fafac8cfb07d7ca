//! Inference processes end to end: a llama-server started with an API key, a Hugging Face token and a pre-signed model URL shows none of them in any output, in-process or through an agent, and the processes beyond those the agent lists are counted wherever processes are printed.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use nodectl_e2e::harness::{self, Agent, node_fixture_copy, nodectl_json, nodectl_with};
use nodectl_e2e::hung_node::{HungNode, PID, StopsIn};
use serde_json::Value;

/// Wide enough that no table cell wraps: a secret broken across two lines would escape a search.
const NO_WRAP: (&str, &str) = ("COLUMNS", "10000");

const API_KEY: &str = "sk-e2eS3CRETapikey0123456789abcdefghijklmn";
const API_KEY_TOO: &str = "Plain3ecretApiKeyValue";
const HF_TOKEN: &str = "hf_e2eS3CRETtokenABCDEFGHIJKLMNOPQRSTU";
const ENV_API_KEY: &str = "EnvApiKeyS3CRET42";
const ENV_HF_TOKEN: &str = "hf_envS3CRETtokenABCDEFGHIJKLMNOPQRSTU";
const AWS_KEY_ID: &str = "AKIAS3CRETE2E0000000";
const SIGNATURE: &str = "5ec3e7a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d";

/// Every secret the planted process carries: none may appear in any output.
const SECRETS: [&str; 7] = [
    API_KEY,
    API_KEY_TOO,
    HF_TOKEN,
    ENV_API_KEY,
    ENV_HF_TOKEN,
    AWS_KEY_ID,
    SIGNATURE,
];

fn signed_url() -> String {
    format!(
        "https://bucket.s3.amazonaws.com/m.gguf?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={AWS_KEY_ID}%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
    )
}

/// The hung-node tree (a llama-server stalled in its upload, its pod log, a MES hang), its
/// process started with secrets on its command line and in its environment.
fn tree_with_secrets() -> anyhow::Result<(tempfile::TempDir, std::path::PathBuf)> {
    let (dir, root) = HungNode {
        stops_in: StopsIn::Upload,
        environ: vec![
            "PATH=/usr/bin".into(),
            "HSA_ENABLE_SDMA=0".into(),
            format!("LLAMA_ARG_API_KEY={ENV_API_KEY}"),
            format!("LLAMA_ARG_HF_TOKEN={ENV_HF_TOKEN}"),
            format!("LLAMA_ARG_MODEL_URL={}", signed_url()),
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
        &format!("--api-key={API_KEY_TOO}"),
        "--host",
        "0.0.0.0",
        "-lv",
        "5",
    ];
    std::fs::write(
        root.join(format!("proc/{PID}/cmdline")),
        format!("{}\0", args.join("\0")),
    )?;
    Ok((dir, root))
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
}

/// The planted process as a JSON document lists it.
fn planted(processes: &Value) -> anyhow::Result<&Value> {
    processes
        .as_array()
        .and_then(|all| all.iter().find(|p| p["pid"] == PID))
        .with_context(|| format!("process {PID} not in {processes:#}"))
}

/// The flags stay, their values do not, and the allowlisted variable the diagnosis needs shows.
fn assert_redacted_process(what: &str, process: &Value) {
    let args: Vec<&str> = process["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for expected in [
        "--api-key",
        "<redacted:api-key>",
        "--hf-token",
        "<redacted:hf-token>",
        "--api-key=<redacted:api-key>",
        "-m",
        "/models/Qwen3-30B-A3B-Q4_K_M.gguf",
    ] {
        assert!(
            args.contains(&expected),
            "{what}: {expected} not in {args:?}"
        );
    }
    let env = &process["env"];
    assert_eq!(env["HSA_ENABLE_SDMA"], "0", "{what}: {env:#}");
    assert_eq!(env["LLAMA_ARG_API_KEY"], "<redacted:api-key>", "{what}");
    assert_eq!(env["LLAMA_ARG_HF_TOKEN"], "<redacted:hf-token>", "{what}");
    let url = env["LLAMA_ARG_MODEL_URL"].as_str().unwrap_or_default();
    assert!(
        url.starts_with("https://bucket.s3.amazonaws.com/m.gguf?X-Amz-Algorithm=")
            && url.contains("&X-Amz-Signature=<redacted:url-query>"),
        "{what}: {url}"
    );
    assert!(env.get("PATH").is_none(), "{what}: {env:#}");
}

/// `node show` and `diagnose` in every format from one source (`--host-root DIR` or
/// `--endpoint URL`): no secret anywhere, the flags and `HSA_ENABLE_SDMA` still there.
fn check_every_output(source: &[&str]) -> anyhow::Result<()> {
    let with = |args: &[&str]| -> Vec<String> {
        args.iter().chain(source).map(|a| (*a).to_owned()).collect()
    };
    let run = |args: &[&str]| -> anyhow::Result<harness::Run> {
        let args = with(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = nodectl_with(&args, &[NO_WRAP], None)?;
        assert!(
            run.code == 0 || run.code == 1,
            "{args:?}: exit {}\n{}",
            run.code,
            run.stderr
        );
        assert_no_secret(&format!("{args:?} (stderr)"), &run.stderr);
        assert_no_secret(&format!("{args:?}"), &run.stdout);
        Ok(run)
    };

    let shown = run(&["node", "show", "-o", "json"])?;
    let json: Value = serde_json::from_str(&shown.stdout)?;
    assert_redacted_process("node show -o json", planted(&json["inference_processes"])?);

    let table = run(&["node", "show"])?.stdout;
    for words in [
        "--api-key <redacted:api-key>",
        "--hf-token <redacted:hf-token>",
        "--api-key=<redacted:api-key>",
        "HSA_ENABLE_SDMA=0",
        "LLAMA_ARG_API_KEY=<redacted:api-key>",
    ] {
        assert!(
            table.contains(words),
            "node show: {words} missing:\n{table}"
        );
    }

    let diagnosed = run(&["diagnose", "-o", "json"])?;
    let json: Value = serde_json::from_str(&diagnosed.stdout)?;
    let processes: Vec<Value> = json["diagnoses"]
        .as_array()
        .map(|d| d.iter().map(|d| d["process"].clone()).collect())
        .unwrap_or_default();
    assert_redacted_process("diagnose -o json", planted(&Value::from(processes))?);

    let named = run(&["diagnose", "--pod", "llm/llama-0", "-o", "json"])?;
    let json: Value = serde_json::from_str(&named.stdout)?;
    assert_redacted_process("diagnose --pod -o json", &json["process"]);

    let yaml = run(&["diagnose", "-o", "yaml"])?.stdout;
    for words in ["--api-key", "<redacted:api-key>", "HSA_ENABLE_SDMA"] {
        assert!(
            yaml.contains(words),
            "diagnose -o yaml: {words} missing:\n{yaml}"
        );
    }

    let table = run(&["diagnose"])?.stdout;
    for words in ["HSA_ENABLE_SDMA=0", "LLAMA_ARG_API_KEY=<redacted:api-key>"] {
        assert!(table.contains(words), "diagnose: {words} missing:\n{table}");
    }
    Ok(())
}

#[test]
fn a_process_with_secret_arguments_variables_and_a_signed_url_shows_none_of_them()
-> anyhow::Result<()> {
    let (_dir, root) = tree_with_secrets()?;
    let root_arg = root.to_string_lossy().into_owned();
    check_every_output(&["--host-root", &root_arg])?;

    let agent = Agent::start(&root, &["--metrics-listen", "127.0.0.1:0"])?;
    check_every_output(&["--endpoint", &agent.endpoint])?;
    let metrics = harness::http_get(agent.listener("metrics").context("metrics")?, "/metrics")?;
    assert_no_secret("/metrics", &metrics);
    agent.terminate()?;
    Ok(())
}

/// `proc/PID` of a llama-server that is nothing more than its name, arguments and state.
fn plant_llama_server(root: &Path, pid: u32) -> anyhow::Result<()> {
    let dir = root.join(format!("proc/{pid}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("comm"), "llama-server\n")?;
    std::fs::write(
        dir.join("cmdline"),
        format!("/app/llama-server\0-m\0/models/{pid}.gguf\0"),
    )?;
    std::fs::write(
        dir.join("stat"),
        format!(
            "{pid} (llama-server) S 1 {pid} {pid} 0 -1 4194560 1000 0 0 0 5000 300 0 0 20 0 3 0 100 1000000 1000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 3 0 0 0 0 0\n"
        ),
    )?;
    Ok(())
}

#[test]
fn processes_beyond_those_listed_are_counted_wherever_processes_are_printed() -> anyhow::Result<()>
{
    let listed = nodectl_agent::limits::MAX_INFERENCE_PROCESSES;
    let dir = node_fixture_copy("no-gpu")?;
    let root = dir.path().join("root");
    for pid in 0..listed + 2 {
        plant_llama_server(&root, 5000 + u32::try_from(pid)?)?;
    }
    let root_arg = root.to_string_lossy().into_owned();
    let line =
        format!("2 more inference processes run on the node: the agent lists the first {listed}.");

    let (code, json) = nodectl_json(&["node", "show", "--host-root", &root_arg, "-o", "json"])?;
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(
        json["inference_processes"].as_array().map(Vec::len),
        Some(listed)
    );
    assert_eq!(json["inference_processes_not_listed"], 2, "not counted");
    let run = nodectl_with(
        &["node", "show", "--host-root", &root_arg],
        &[NO_WRAP],
        None,
    )?;
    assert!(run.stdout.contains(&line), "{}", run.stdout);

    let (_, json) = nodectl_json(&["diagnose", "--host-root", &root_arg, "-o", "json"])?;
    assert_eq!(json["diagnoses"].as_array().map(Vec::len), Some(listed));
    assert_eq!(json["processes_not_listed"], 2, "not counted");
    let run = nodectl_with(&["diagnose", "--host-root", &root_arg], &[NO_WRAP], None)?;
    assert!(run.stdout.contains(&line), "{}", run.stdout);

    // Through an agent, the count crosses the wire.
    let agent = Agent::start(&root, &[])?;
    let (_, json) = nodectl_json(&["node", "show", "--endpoint", &agent.endpoint, "-o", "json"])?;
    assert_eq!(
        json["inference_processes_not_listed"], 2,
        "lost on the wire"
    );
    let (_, json) = nodectl_json(&["diagnose", "--endpoint", &agent.endpoint, "-o", "json"])?;
    assert_eq!(json["processes_not_listed"], 2, "lost on the wire");
    agent.terminate()?;
    Ok(())
}
