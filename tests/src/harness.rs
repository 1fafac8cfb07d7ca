//! Starts the real `nodectl-agent` and `nodectl` binaries for tests, and finds fixtures and `../shared`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A fixture tree under `tests/fixtures/nodes/`.
pub fn node_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/nodes")
        .join(name)
}

/// A file or folder under `tests/fixtures/`.
pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative)
}

/// `../shared/<relative>` beside the checkout, or `None` with a printed notice when it is absent
/// (the repository stands alone; CI has it and runs the test).
pub fn shared(relative: &str) -> Option<PathBuf> {
    let path = workspace_root().join("../shared").join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: {} is absent; this test needs the shared outside data beside the checkout",
            path.display()
        );
        None
    }
}

/// The cargo profile whose output directory is `dir_name` (`debug` is the `dev` profile's).
fn profile_of(dir_name: &str) -> &str {
    match dir_name {
        "debug" => "dev",
        other => other,
    }
}

/// Path of a workspace binary, built once per test process in the profile the tests run in
/// (a no-op after `cargo test --workspace`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            // target/<profile dir>/deps/<test-exe> → target/<profile dir>
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .ok_or_else(|| format!("no target dir above {}", exe.display()))?;
            let profile = dir
                .file_name()
                .and_then(|n| n.to_str())
                .map(profile_of)
                .ok_or_else(|| format!("no profile in {}", dir.display()))?
                .to_owned();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = Command::new(cargo)
                .current_dir(workspace_root())
                .args(["build", "--quiet", "--workspace", "--bins", "--profile"])
                .arg(&profile)
                .status()
                .map_err(|e| format!("running cargo build: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build of the binaries failed: {status}"));
            }
            Ok(dir)
        })
        .clone()
        .map_err(anyhow::Error::msg)?;
    let path = dir.join(name);
    if !path.exists() {
        bail!("binary {} not found", path.display());
    }
    Ok(path)
}

/// Compares `json` (pretty-printed, keys sorted) with the golden file at `golden`;
/// `NODECTL_UPDATE_GOLDEN=1` rewrites the file instead (review the diff before committing it).
pub fn assert_golden(golden: &Path, json: &serde_json::Value) -> anyhow::Result<()> {
    let text = format!("{}\n", serde_json::to_string_pretty(json)?);
    assert_golden_text(golden, &text)
}

/// [`assert_golden`] for text (a metrics scrape, a rendered table).
pub fn assert_golden_text(golden: &Path, text: &str) -> anyhow::Result<()> {
    if std::env::var_os("NODECTL_UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, text)?;
    }
    let expected = std::fs::read_to_string(golden).with_context(|| {
        format!(
            "{} (create it with NODECTL_UPDATE_GOLDEN=1)",
            golden.display()
        )
    })?;
    assert_eq!(
        text,
        expected,
        "differs from the golden file {}; rerun with NODECTL_UPDATE_GOLDEN=1 if the change is intended",
        golden.display()
    );
    Ok(())
}

/// The `kind` of every incident of an `events -o json` document, in order.
pub fn incident_kinds(json: &serde_json::Value) -> Vec<&str> {
    json["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["kind"].as_str())
        .collect()
}

/// Whether this machine has an amdgpu device (the target users' machines do; CI's does not).
pub fn has_amdgpu() -> bool {
    std::path::Path::new("/sys/bus/pci/drivers/amdgpu").is_dir()
        || std::path::Path::new("/sys/module/amdgpu").is_dir()
}

/// Fails a test whose outside program is missing when it runs in CI (`CI` set), where
/// `.ci/install-deps` must have installed it; elsewhere prints a notice, and the caller skips.
pub fn outside_program_missing(program: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{program} is not installed, and CI must run every test (.ci/install-deps installs it)"
    );
    eprintln!("SKIPPED: {program} is not installed (.ci/test installs it with .ci/install-deps)");
}

/// `GET path` over HTTP/1.1 on `addr`; the body of a 200 answer.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP body")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.to_owned())
}

/// Checks a Prometheus text exposition with `promtool check metrics`, as node_exporter's tests
/// do (skipped with a notice outside CI when promtool is missing).
pub fn promtool_check(body: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            outside_program_missing("promtool");
            return Ok(());
        }
        other => other?,
    };
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(body.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A copy of a node fixture tree (symlinks kept) at `root/` of a new temporary directory, to damage.
pub fn node_fixture_copy(name: &str) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(node_fixture(name))
        .arg(dir.path().join("root"))
        .status()?;
    anyhow::ensure!(status.success(), "cp -a {name}");
    Ok(dir)
}

/// Whether the main thread of process `pid` has returned: the process is gone or a zombie
/// (whose other threads may still be inside the kernel).
pub fn main_thread_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any byte.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Waits up to `limit` for the main thread of `pid` to end (a thread may stay behind in a read
/// the kernel holds); whether it did.
pub fn main_thread_ends_within(pid: u32, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !main_thread_ended(pid) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The health an agent at `endpoint` reports for `service` (`""` for the agent as a whole).
pub async fn health(endpoint: &str, service: &str) -> anyhow::Result<i32> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .connect()
        .await?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(reply.into_inner().status)
}

/// Waits up to `limit` for `service` of the agent at `endpoint` to report SERVING; whether it did.
pub async fn serving_within(endpoint: &str, service: &str, limit: Duration) -> bool {
    let serving = async {
        while health(endpoint, service).await? != tonic_health::ServingStatus::Serving as i32 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    };
    matches!(tokio::time::timeout(limit, serving).await, Ok(Ok(())))
}

/// (VmRSS, VmHWM) of a process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// A running `nodectl-agent`; stopped with SIGTERM (then killed) when dropped.
pub struct Agent {
    child: Child,
    /// `http://127.0.0.1:PORT` of its gRPC listener.
    pub endpoint: String,
    /// Every `listening KEY=VALUE` line it printed, e.g. (`grpc`, `127.0.0.1:PORT`).
    pub listeners: Vec<(String, String)>,
}

impl Agent {
    /// Starts the agent on `127.0.0.1:0` over `host_root`, with extra flags, and waits until it is ready.
    pub fn start(host_root: &Path, extra_args: &[&str]) -> anyhow::Result<Agent> {
        Self::start_with_stderr(host_root, extra_args, Stdio::inherit())
    }

    /// [`Agent::start`] with its standard error (the log) written to `log`.
    pub fn start_logging_to(
        host_root: &Path,
        extra_args: &[&str],
        log: &Path,
    ) -> anyhow::Result<Agent> {
        let file = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        Self::start_with_stderr(host_root, extra_args, Stdio::from(file))
    }

    fn start_with_stderr(
        host_root: &Path,
        extra_args: &[&str],
        stderr: Stdio,
    ) -> anyhow::Result<Agent> {
        let mut child = Command::new(binary("nodectl-agent")?)
            .arg("--host-root")
            .arg(host_root)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("starting nodectl-agent")?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut listeners = Vec::new();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    let _ = tx.send(Ok(listeners));
                    // Keep draining so the agent never blocks on a full pipe.
                    for _ in lines.by_ref() {}
                    return;
                }
                if let Some((key, value)) = line
                    .strip_prefix("listening ")
                    .and_then(|kv| kv.split_once('='))
                {
                    listeners.push((key.to_owned(), value.to_owned()));
                }
            }
            let _ = tx.send(Err("agent exited before it was ready".to_owned()));
        });
        let listeners = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(listeners)) => listeners,
            Ok(Err(e)) => {
                let _ = child.kill();
                bail!("{e}");
            }
            Err(_) => {
                let _ = child.kill();
                bail!("agent not ready within 60 s");
            }
        };
        let scheme = if extra_args.contains(&"--tls-cert") {
            "https"
        } else {
            "http"
        };
        let grpc = listeners
            .iter()
            .find(|(k, v)| k == "grpc" && !v.starts_with("unix:"))
            .map(|(_, v)| format!("{scheme}://{v}"))
            .context("agent printed no TCP grpc listener")?;
        Ok(Agent {
            child,
            endpoint: grpc,
            listeners,
        })
    }

    /// The address of a listener it printed (`grpc`, `metrics`, ...).
    pub fn listener(&self, key: &str) -> Option<&str> {
        self.listeners
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits at most `limit` for the exit: `Some(success)`, or `None` when it
    /// is still running then (it is killed when dropped).
    pub fn terminate_within(&mut self, limit: Duration) -> anyhow::Result<Option<bool>> {
        self.signal_term()?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status.success()));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits at most `limit` for the agent's main thread to end: whether it
    /// did. A thread blocked in the kernel (a read of a hung device) keeps the process from being
    /// reaped until that read returns, which nothing the agent does can change; the agent has
    /// stopped once its main thread has returned.
    pub fn terminate_main_within(&mut self, limit: Duration) -> anyhow::Result<bool> {
        self.signal_term()?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self.child.try_wait()?.is_some() || main_thread_ended(self.child.id()) {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the exit; whether it exited with status 0.
    pub fn wait_exit(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.wait()?.success())
    }

    /// Resident memory of the agent now (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let kib = self.status_field("VmRSS")?;
        Ok(kib * 1024)
    }

    /// The most resident memory the agent has had (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        Ok(self.status_field("VmHWM")? * 1024)
    }

    /// Threads of the agent now.
    pub fn threads(&self) -> anyhow::Result<u64> {
        self.status_field("Threads")
    }

    /// A number of `/proc/PID/status` (its unit dropped).
    fn status_field(&self, name: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} line"))
    }

    /// Kills it at once (SIGKILL), as a crash or an OOM kill would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited with status 0.
    pub fn terminate(mut self) -> anyhow::Result<bool> {
        self.signal_term()?;
        let status = self.child.wait()?;
        Ok(status.success())
    }

    fn signal_term(&self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.signal_term();
            for _ in 0..50 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a `nodectl` run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Starts `nodectl` with `args` and hands its standard output line by line (a follow stream);
/// the caller kills the child when done.
pub fn nodectl_lines(args: &[&str]) -> anyhow::Result<(Child, std::sync::mpsc::Receiver<String>)> {
    let mut child = Command::new(binary("nodectl")?)
        .args(args)
        .env("XDG_DATA_HOME", NO_USER_DATA)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting nodectl")?;
    let stdout = child.stdout.take().context("nodectl stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

/// Where nodectl run by the tests looks for its user data (the experiment log): nowhere, so
/// that a developer's own log never changes what a test sees.
pub const NO_USER_DATA: &str = "/nonexistent/nodectl-tests";

/// Runs `nodectl` with `args` to the end.
pub fn nodectl(args: &[&str]) -> anyhow::Result<Run> {
    nodectl_with(args, &[], None)
}

/// Runs `nodectl` with `args` (which ask for `-o json`): its exit code and its output as JSON,
/// or an error showing what it printed instead.
pub fn nodectl_json(args: &[&str]) -> anyhow::Result<(i32, serde_json::Value)> {
    let run = nodectl(args)?;
    let json = serde_json::from_str(&run.stdout).map_err(|e| {
        anyhow::anyhow!(
            "not JSON ({e}): exit {}\n{}\n{}",
            run.code,
            run.stdout,
            run.stderr
        )
    })?;
    Ok((run.code, json))
}

/// Runs `nodectl` with `args`, extra environment and optional standard input.
pub fn nodectl_with(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> anyhow::Result<Run> {
    use std::io::Write as _;
    let mut command = Command::new(binary("nodectl")?);
    command
        .args(args)
        .env("XDG_DATA_HOME", NO_USER_DATA)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("starting nodectl")?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    Ok(Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Writes a record to this machine's `/dev/kmsg` as a user process may (`<12>`: facility user,
/// level warning); tests that read the live kernel log run as root.
pub fn write_kmsg(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().write(true).open("/dev/kmsg")?;
    f.write_all(format!("<12>{text}\n").as_bytes())?;
    Ok(())
}

/// A tag no other record of the kernel log holds: this test's, this moment's.
pub fn unique_tag(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("nodectl-test-{what}-{}-{nanos}", std::process::id())
}
