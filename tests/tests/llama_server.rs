//! `nodectl diagnose` against a real llama-server (CPU build of the pinned llama.cpp, tiny random model): clean starts at default verbosity and at `-lv 4`, the live probe while loading and when ready, the process collector, and a real stall found in its phase.
//!
//! `.ci/install-deps` builds the server and the model once and `.ci/test` says where they are
//! (`NODECTL_LLAMA_SERVER`, `NODECTL_LLAMA_MODEL`). The servers run one at a time: a diagnosis
//! ties a log to the one llama-server of the host.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nodectl_e2e::harness::{nodectl, nodectl_json, outside_program_missing};
use nodectl_e2e::stalled_file::StalledFile;
use serde_json::Value;

static ONE_SERVER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The server and model `.ci/install-deps` built, or `None` (failing under CI).
fn llama() -> Option<(PathBuf, PathBuf)> {
    let server = std::env::var_os("NODECTL_LLAMA_SERVER").map(PathBuf::from);
    let model = std::env::var_os("NODECTL_LLAMA_MODEL").map(PathBuf::from);
    match (server, model) {
        (Some(s), Some(m)) if s.is_file() && m.is_file() => Some((s, m)),
        _ => {
            outside_program_missing("llama-server (NODECTL_LLAMA_SERVER, NODECTL_LLAMA_MODEL)");
            None
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A llama-server writing its log to a file; killed when dropped.
struct Server {
    child: Child,
    log: PathBuf,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(server: &Path, model: &Path, extra: &[&str]) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("llama-server.log");
        let port = free_port()?.to_string();
        let file = std::fs::File::create(&log)?;
        let child = Command::new(server)
            .args([
                "-m",
                &model.to_string_lossy(),
                "--host",
                "127.0.0.1",
                "--port",
                &port,
            ])
            .args(["-c", "256", "-t", "2", "--metrics"])
            .args(extra)
            .env("HSA_ENABLE_SDMA", "0")
            .env("API_TOKEN", "secret")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(Server {
            child,
            log,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle`.
    fn wait_for(&self, needle: &str, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("no {needle:?} within {limit:?}:\n{}", self.log_text())
    }

    fn log_arg(&self) -> String {
        self.log.to_string_lossy().into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
        let _ = self.child.kill();
        // A process inside an unanswered read cannot be reaped: wait a while, not forever.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "llama-server {} did not exit after SIGKILL",
            self.child.id()
        );
    }
}

/// One `/completion` request, to its end.
fn complete(url: &str) -> anyhow::Result<String> {
    let addr = url.trim_start_matches("http://");
    let body = r#"{"prompt":"Strix Halo","n_predict":4}"#;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "POST /completion HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    anyhow::ensure!(response.starts_with("HTTP/1.1 200"), "{response}");
    Ok(response)
}

fn diagnose(args: &[&str]) -> anyhow::Result<(i32, Value)> {
    let mut full = vec!["diagnose"];
    full.extend_from_slice(args);
    full.extend(["-o", "json"]);
    nodectl_json(&full)
}

fn phases(json: &Value) -> Vec<String> {
    json["log"]["timeline"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["phase"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_SERVER_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn a_default_verbosity_start_is_ready_then_serving() -> anyhow::Result<()> {
    let Some((bin, model)) = llama() else {
        return Ok(());
    };
    let _one = lock();
    let server = Server::start(&bin, &model, &[])?;
    server.wait_for("listening on", Duration::from_secs(60))?;
    let (code, json) = diagnose(&["--log", &server.log_arg()])?;
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["outcome"], "ready", "{json:#}");
    assert_eq!(json["log"]["verbosity"], 3);
    // The terse log shows no loading phase, only that the load began: startup, loading, ready.
    assert_eq!(
        phases(&json),
        ["startup", "loading", "ready"],
        "{}",
        server.log_text()
    );
    // The log is tied to the one llama-server running, found with its allowlisted env only.
    assert_eq!(json["process"]["pid"], server.pid(), "{json:#}");
    assert_eq!(json["process"]["env"]["HSA_ENABLE_SDMA"], "0");
    assert!(!json.to_string().contains("secret"));

    complete(&server.url)?;
    server.wait_for("stop processing", Duration::from_secs(30))?;
    let (code, json) = diagnose(&["--log", &server.log_arg(), "--url", &server.url])?;
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["outcome"], "serving", "{json:#}");
    assert_eq!(json["probe"]["health"], "ready");
    assert_eq!(json["probe"]["metrics_enabled"], true);
    assert_eq!(json["probe"]["total_slots"], 4);
    assert!(json["strategies"].as_array().is_some_and(Vec::is_empty));
    Ok(())
}

#[test]
fn a_trace_level_start_shows_every_loading_phase() -> anyhow::Result<()> {
    let Some((bin, model)) = llama() else {
        return Ok(());
    };
    let _one = lock();
    let server = Server::start(&bin, &model, &["-lv", "4"])?;
    server.wait_for("all slots are idle", Duration::from_secs(60))?;
    let (code, json) = diagnose(&["--log", &server.log_arg()])?;
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["outcome"], "ready", "{json:#}");
    assert_eq!(json["log"]["verbosity"], 4);
    assert_eq!(json["log"]["backend"], "cpu");
    assert_eq!(json["log"]["load_mode"], "mmap");
    let seen = phases(&json);
    for phase in [
        "startup",
        "device_init",
        "memory_fit",
        "model_metadata",
        "tensor_load",
        "context",
        "graph_reserve",
        "warmup",
        "ready",
    ] {
        assert!(
            seen.iter().any(|p| p == phase),
            "{phase} missing from {seen:?}"
        );
    }
    complete(&server.url)?;
    server.wait_for("stop processing", Duration::from_secs(30))?;
    let (_, json) = diagnose(&["--log", &server.log_arg()])?;
    assert_eq!(json["outcome"], "serving", "{json:#}");
    Ok(())
}

#[test]
fn the_process_collector_finds_the_server_in_process() -> anyhow::Result<()> {
    let Some((bin, model)) = llama() else {
        return Ok(());
    };
    let _one = lock();
    let server = Server::start(&bin, &model, &["--threads-http", "2"])?;
    server.wait_for("listening on", Duration::from_secs(60))?;
    let (_, json) = diagnose(&[])?;
    let found = json["diagnoses"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["process"]["pid"] == server.pid()))
        .unwrap_or_else(|| panic!("server {} not found: {json:#}", server.pid()));
    let process = &found["process"];
    assert_eq!(process["program"], "llama-server");
    assert_eq!(process["env"], serde_json::json!({"HSA_ENABLE_SDMA": "0"}));
    assert!(
        process["threads_total"].as_u64().unwrap_or(0) >= 3,
        "{process:#}"
    );
    assert!(process["cpu_ms_in_sample"].is_u64(), "{process:#}");
    assert_eq!(found["activity"], "idle", "{found:#}");
    Ok(())
}

#[test]
fn a_load_that_stops_is_stalled_in_its_phase_with_the_process_stopped() -> anyhow::Result<()> {
    let Some((bin, model)) = llama() else {
        return Ok(());
    };
    if !Path::new("/dev/fuse").exists() {
        outside_program_missing("/dev/fuse (FUSE)");
        return Ok(());
    }
    let _one = lock();
    // The model on a file system that answers its metadata and holds its tensor data: the
    // load stops in tensor load, as on a disk that stopped answering.
    let dir = tempfile::tempdir()?;
    let held_model = dir.path().join("held.gguf");
    std::fs::copy(&model, &held_model)?;
    // The loader reads the file's last bytes first, then the metadata (under 1 MiB), then
    // the tensors: the reads from 2 MiB to near the end are held.
    let size = std::fs::metadata(&held_model)?.len();
    let held = StalledFile::mount_holding(&held_model, 2 * 1024 * 1024..size - 64 * 1024)?;
    // Read, not mapped (a FUSE direct-I/O file cannot be mapped): the reads are the load. No
    // fit pre-pass: its mock load would be the one held.
    let server = Server::start(
        &bin,
        &held_model,
        &["-lv", "4", "--load-mode", "none", "--fit", "off"],
    )?;
    // The held reads are let go before the server is killed, whatever happens: a process
    // waiting on an unanswered FUSE read cannot be reaped.
    let result = stalled_in_tensor_load(&server, &held);
    if let Err(e) = &result {
        eprintln!("{e:#}\n--- llama-server log ---\n{}", server.log_text());
    }
    held.release();
    drop(server);
    result
}

fn stalled_in_tensor_load(server: &Server, held: &StalledFile) -> anyhow::Result<()> {
    server.wait_for(
        "load_tensors: loading model tensors",
        Duration::from_secs(60),
    )?;
    let start = Instant::now();
    while held.reads_held() == 0 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(held.reads_held() > 0, "{}", server.log_text());

    // While held: the HTTP threads answer 503, the loading thread waits in the kernel.
    let (code, json) = diagnose(&["--log", &server.log_arg(), "--url", &server.url])?;
    assert_eq!(code, 0, "not quiet long enough yet: {json:#}");
    assert_eq!(json["probe"]["health"], "loading", "{json:#}");
    assert_eq!(json["outcome"], "incomplete");
    assert_eq!(json["phase"], "tensor_load");
    assert_eq!(
        json["activity"], "blocked_in_kernel",
        "{:#}",
        json["process"]
    );

    // Stopped, and the held reads let go: the process stays where it is, the log goes quiet.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )?;
    held.release();
    let stat = format!("/proc/{}/stat", server.pid());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let text = std::fs::read_to_string(&stat).unwrap_or_default();
        if text
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (code, json) = diagnose(&["--log", &server.log_arg(), "--stall-after", "2s"])?;
    assert_eq!(code, 1, "stalled is exit 1: {json:#}");
    assert_eq!(json["outcome"], "stalled", "{json:#}");
    assert_eq!(json["phase"], "tensor_load");
    assert_eq!(json["phase_confidence"], "high");
    assert_eq!(json["activity"], "stopped", "{:#}", json["process"]);
    assert!(json["stalled_for_s"].as_u64().unwrap_or(0) >= 2);
    let text = nodectl(&[
        "diagnose",
        "--log",
        &server.log_arg(),
        "--stall-after",
        "2s",
    ])?;
    assert!(
        text.stdout.contains("stalled in tensor_load"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("is stopped"), "{}", text.stdout);
    Ok(())
}
