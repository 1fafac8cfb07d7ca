//! Which host processes are LLM inference servers (llama.cpp, ollama runners), which container and pod they run in, and the part of their environment that may leave the node.
//!
//! Pure functions over the bytes of `/proc/PID/{comm,cmdline,environ,cgroup,…}`, and the
//! collector that reads them through the bounded, deadline-guarded [`Reader`]: reading
//! `cmdline` or `environ` of a process whose memory lock a stuck GPU operation holds blocks.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use nodectl_model::inference::{
    CardMemoryTrend, InferenceProcess, InferenceProcesses, KfdProcess, ProcessThread,
};
use procfs::FromRead as _;

use super::{Reader, cards::CardDir, memory, parse_number};
use crate::limits::{
    MAX_FDS_SCANNED, MAX_INFERENCE_PROCESSES, MAX_PROCESSES_SCANNED, MAX_THREADS_LISTED,
};
use crate::redact;

/// The inference programs looked for, by the name of their executable.
const PROGRAMS: [&str; 5] = [
    "llama-server",
    "llama-cli",
    "llama-bench",
    "ollama",
    "ollama_llama_server",
];

/// Environment variables that may leave the node: the runtime knobs of ROCm, HIP, ggml and
/// llama.cpp that change how a run loads and what it hangs on. Nothing else ever does (tokens,
/// keys and URLs live in the same environment).
const ENV_PREFIXES: [&str; 8] = [
    "HSA_",
    "HIP_",
    "ROCR_",
    "ROCBLAS_",
    "HIPBLASLT_",
    "GGML_",
    "LLAMA_ARG_",
    "AMD_SERIALIZE_",
];
const ENV_NAMES: [&str; 2] = ["AMD_LOG_LEVEL", "GPU_MAX_HW_QUEUES"];

/// The program of a process when it is one of the inference programs: by `comm` (cut to 15
/// bytes by the kernel), by the executable of its first argument, or, for ollama's runner
/// (`ollama runner …`), by its arguments.
pub fn inference_program(comm: &str, cmdline: &[String]) -> Option<&'static str> {
    let exe = cmdline
        .first()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or("");
    let comm = comm.trim_end();
    let by_name = PROGRAMS.iter().copied().find(|p| {
        *p == exe || *p == comm || (comm.len() == 15 && p.len() > 15 && p.starts_with(comm))
    })?;
    if by_name == "ollama" {
        // The ollama server itself does no inference; its `runner` children do.
        return cmdline
            .get(1)
            .is_some_and(|a| a == "runner")
            .then_some("ollama runner");
    }
    Some(by_name)
}

/// Whether a process named `comm`, running the executable at `exe`, may be an inference
/// program: the cheap test before its arguments are read.
fn may_be_inference_program(comm: &str, exe: &str) -> bool {
    let exe = exe.trim_end_matches(" (deleted)");
    let exe = exe.rsplit('/').next().unwrap_or("");
    inference_program(comm, &[exe.to_owned(), "runner".to_owned()]).is_some()
}

/// `/proc/PID/cmdline`: NUL-separated arguments (a trailing NUL ends the last), with their
/// credentials redacted here, where they are read: nothing downstream (snapshot, diagnosis,
/// metrics, bundle) ever holds `--api-key`'s value.
pub fn split_cmdline(bytes: &[u8]) -> Vec<String> {
    let mut args: Vec<String> = bytes
        .strip_suffix(b"\0")
        .unwrap_or(bytes)
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    redact::redact_args(&mut args);
    args
}

/// `/proc/PID/environ` restricted to the allowlist; everything else is dropped here, on the node.
/// The allowlist is by prefix, so it lets `LLAMA_ARG_API_KEY` and `LLAMA_ARG_MODEL_URL` through:
/// their values are redacted here too.
pub fn allowed_env(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let entry = std::str::from_utf8(entry).ok()?;
            let (name, value) = entry.split_once('=')?;
            let allowed = ENV_NAMES.contains(&name)
                || ENV_PREFIXES.iter().any(|prefix| name.starts_with(prefix));
            allowed.then(|| (name.to_owned(), redact::redact_env_value(name, value)))
        })
        .collect()
}

/// The container and pod of a process, from its cgroup path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The container id (64 hex digits) of containerd, CRI-O or Docker.
    pub container_id: Option<String>,
    /// The pod's UID, as the kubelet writes it in the cgroup name (`_` for `-` under systemd).
    pub pod_uid: Option<String>,
}

/// Reads `/proc/PID/cgroup` (v2 `0::/path`, or v1 lines): cgroupfs
/// `/kubepods/burstable/pod<uid>/<id>`, systemd `kubepods-burstable-pod<uid_with_underscores>.slice/
/// cri-containerd-<id>.scope` (or `crio-<id>.scope`, `docker-<id>.scope`).
pub fn placement(cgroup: &str) -> Placement {
    let mut out = Placement::default();
    for line in cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        for part in path.split('/') {
            let part = part.strip_suffix(".slice").unwrap_or(part);
            if let Some(at) = part.rfind("pod") {
                let uid = &part[at + 3..];
                if is_uid(uid) {
                    out.pod_uid = Some(uid.replace('_', "-"));
                }
            }
            let id = part
                .strip_suffix(".scope")
                .unwrap_or(part)
                .rsplit('-')
                .next()
                .unwrap_or("");
            if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.container_id = Some(id.to_owned());
            }
        }
    }
    out
}

/// Every inference process of the root, with CPU time, KFD evictions and the cards' GPU memory
/// watched over `window` (zero: one reading). Blocking: it sleeps for the window.
pub fn collect(reader: &mut Reader<'_>, cards: &[CardDir], window: Duration) -> InferenceProcesses {
    // A saved tree stands still: reading it twice a window apart would show processes that used
    // no CPU, which is not what they did. No window, so nothing is said about it.
    let window = if reader.root.frozen_at().is_some() {
        Duration::ZERO
    } else {
        window
    };
    let proc_dir = reader.root.proc();
    let pods = pod_names(reader);
    let boot_time = reader
        .text(&proc_dir.join("stat"))
        .and_then(|stat| crate::kmsg::pipeline::parse_btime(&stat));
    let mut out = InferenceProcesses::default();
    let entries = reader.dir(&proc_dir).unwrap_or_default();
    let mut found = Vec::new();
    for (name, dir) in entries.iter().take(MAX_PROCESSES_SCANNED) {
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        let Some(comm) = reader.line(&dir.join("comm")) else {
            continue;
        };
        // `cmdline` waits on the process's memory lock, which a process stuck in the kernel
        // (rocm-smi in D state) may hold: it is read only for a name that may be one of ours.
        // The executable's link needs no such lock.
        let exe = reader.link(&dir.join("exe")).unwrap_or_default();
        if !may_be_inference_program(&comm, &exe) {
            continue;
        }
        let cmdline = split_cmdline(&reader.bytes(&dir.join("cmdline")).unwrap_or_default());
        let Some(program) = inference_program(&comm, &cmdline) else {
            continue;
        };
        if found.len() == MAX_INFERENCE_PROCESSES {
            out.processes_not_listed += 1;
            continue;
        }
        found.push(read_process(
            reader, dir, pid, program, comm, cmdline, &pods, boot_time,
        ));
    }

    let memory_start: Vec<_> = cards
        .iter()
        .map(|c| memory::collect(reader, &c.device))
        .collect();
    if !window.is_zero() {
        let before: Vec<Ticks> = found.iter().map(|(_, t)| t.clone()).collect();
        let first_reading_done = Instant::now();
        std::thread::sleep(window);
        // The window the CPU times cover: the pause, plus reading the files in between.
        out.sample_ms = u32::try_from(first_reading_done.elapsed().as_millis()).unwrap_or(u32::MAX);
        let ticks_per_ms = procfs::ticks_per_second() as f64 / 1000.0;
        let to_ms = |ticks: u64| (ticks as f64 / ticks_per_ms).round() as u64;
        for ((process, _), before) in found.iter_mut().zip(before) {
            let dir = proc_dir.join(process.pid.to_string());
            let after = read_ticks(reader, &dir, &process.threads);
            if let (Some(a), Some(b)) = (after.process, before.process) {
                process.cpu_ms_in_sample = Some(to_ms(a.saturating_sub(b)));
            }
            for thread in &mut process.threads {
                if let (Some(a), Some(b)) = (
                    after.threads.get(&thread.tid),
                    before.threads.get(&thread.tid),
                ) {
                    thread.cpu_ms_in_sample = Some(to_ms(a.saturating_sub(*b)));
                }
            }
            if let Some(kfd) = &mut process.kfd {
                let evicted_after = kfd_process(reader, process.pid).and_then(|k| k.evicted_ms);
                if let (Some(a), Some(b)) = (evicted_after, kfd.evicted_ms) {
                    kfd.evicted_ms_in_sample = Some(a.saturating_sub(b));
                    kfd.evicted_ms = Some(a);
                }
            }
        }
    }
    for (card, start) in cards.iter().zip(&memory_start) {
        let end = (!window.is_zero()).then(|| memory::collect(reader, &card.device));
        let end = end.as_ref().unwrap_or(start);
        out.cards.push(CardMemoryTrend {
            card: card.name.clone(),
            vram_used_bytes_start: start.vram_used_bytes,
            vram_used_bytes_end: end.vram_used_bytes,
            gtt_used_bytes_start: start.gtt_used_bytes,
            gtt_used_bytes_end: end.gtt_used_bytes,
        });
    }
    out.processes = found.into_iter().map(|(p, _)| p).collect();
    out.taken_at = reader.root.now().to_string();
    out.problems = std::mem::take(&mut reader.problems);
    out
}

/// CPU time in clock ticks, of the process and of each listed thread, at one moment.
#[derive(Debug, Clone, Default)]
struct Ticks {
    process: Option<u64>,
    threads: HashMap<u32, u64>,
}

fn stat_of(reader: &mut Reader<'_>, path: &Path) -> Option<procfs::process::Stat> {
    let bytes = reader.bytes(path)?;
    match procfs::process::Stat::from_read(bytes.as_slice()) {
        Ok(stat) => Some(stat),
        Err(e) => {
            reader.problem(path, format!("not a stat line: {e}"));
            None
        }
    }
}

fn read_ticks(reader: &mut Reader<'_>, dir: &Path, threads: &[ProcessThread]) -> Ticks {
    let process = stat_of(reader, &dir.join("stat")).map(|s| s.utime + s.stime);
    let threads = threads
        .iter()
        .filter_map(|t| {
            let stat = stat_of(
                reader,
                &dir.join("task").join(t.tid.to_string()).join("stat"),
            )?;
            Some((t.tid, stat.utime + stat.stime))
        })
        .collect();
    Ticks { process, threads }
}

#[allow(clippy::too_many_arguments)]
fn read_process(
    reader: &mut Reader<'_>,
    dir: &Path,
    pid: u32,
    program: &str,
    comm: String,
    args: Vec<String>,
    pods: &HashMap<String, String>,
    boot_time: Option<jiff::Timestamp>,
) -> (InferenceProcess, Ticks) {
    let env = allowed_env(&reader.bytes(&dir.join("environ")).unwrap_or_default());
    let placement = reader
        .text(&dir.join("cgroup"))
        .map(|c| placement(&c))
        .unwrap_or_default();
    let stat = stat_of(reader, &dir.join("stat"));
    let started_at = stat.as_ref().zip(boot_time).and_then(|(stat, boot)| {
        let ticks = procfs::ticks_per_second().max(1);
        let since_boot = jiff::SignedDuration::from_millis(
            i64::try_from(stat.starttime.saturating_mul(1000) / ticks).ok()?,
        );
        boot.checked_add(since_boot).ok().map(|t| t.to_string())
    });

    let (kfd_fds, dri_handles) = gpu_handles(reader, dir);
    let mut threads = Vec::new();
    let mut thread_ticks = HashMap::new();
    let mut threads_total = 0u32;
    for (name, task) in reader.dir(&dir.join("task")).unwrap_or_default() {
        let Ok(tid) = name.parse::<u32>() else {
            continue;
        };
        threads_total += 1;
        if threads.len() == MAX_THREADS_LISTED {
            continue;
        }
        let Some(stat) = stat_of(reader, &task.join("stat")) else {
            continue;
        };
        let wchan = reader
            .line(&task.join("wchan"))
            .filter(|w| w != "0" && !w.is_empty());
        let in_kfd_ioctl = reader
            .line(&task.join("syscall"))
            .is_some_and(|line| in_ioctl_on(&line, &kfd_fds));
        thread_ticks.insert(tid, stat.utime + stat.stime);
        threads.push(ProcessThread {
            tid,
            name: stat.comm.clone(),
            state: stat.state.to_string(),
            wchan,
            in_kfd_ioctl,
            cpu_ms_in_sample: None,
        });
    }
    let kfd = kfd_process(reader, pid);
    let process = InferenceProcess {
        pid,
        program: program.to_owned(),
        comm,
        args,
        env,
        pod: placement
            .pod_uid
            .as_ref()
            .and_then(|uid| pods.get(uid).cloned()),
        container_id: placement.container_id,
        pod_uid: placement.pod_uid,
        state: stat
            .as_ref()
            .map(|s| s.state.to_string())
            .unwrap_or_default(),
        threads_total,
        cpu_ms_in_sample: None,
        kfd_handles: u32::try_from(kfd_fds.len()).unwrap_or(u32::MAX),
        dri_handles,
        kfd,
        started_at,
        threads,
    };
    // The window's first reading is the one just taken, not a second read of the same files.
    let ticks = Ticks {
        process: stat.map(|s| s.utime + s.stime),
        threads: thread_ticks,
    };
    (process, ticks)
}

/// The descriptors open on `/dev/kfd`, and the `/dev/dri` nodes open (deduplicated).
fn gpu_handles(reader: &mut Reader<'_>, dir: &Path) -> (Vec<u64>, Vec<String>) {
    let mut kfd = Vec::new();
    let mut dri = Vec::new();
    for (name, fd) in reader
        .dir(&dir.join("fd"))
        .unwrap_or_default()
        .into_iter()
        .take(MAX_FDS_SCANNED)
    {
        let Some(target) = reader.link(&fd) else {
            continue;
        };
        if target == "/dev/kfd" {
            if let Ok(n) = name.parse() {
                kfd.push(n);
            }
        } else if let Some(node) = target.strip_prefix("/dev/dri/")
            && !dri.iter().any(|d| d == node)
        {
            dri.push(node.to_owned());
        }
    }
    (kfd, dri)
}

/// `/proc/PID/task/TID/syscall`: `NR ARG1 …` while in a system call (`running` or `-1 …`
/// otherwise); an ioctl whose first argument is one of `kfd_fds` waits on the KFD driver.
fn in_ioctl_on(line: &str, kfd_fds: &[u64]) -> bool {
    let mut fields = line.split_whitespace();
    let Some(Ok(nr)) = fields.next().map(str::parse::<i64>) else {
        return false;
    };
    let fd = fields
        .next()
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
    nr == nix::libc::SYS_ioctl && fd.is_some_and(|fd| kfd_fds.contains(&fd))
}

/// A process's `/sys/class/kfd/kfd/proc/<pid>`: its PASID, `vram_*` and `stats_*/evicted_ms`
/// summed over the GPUs; `None` when the process does not hold `/dev/kfd`.
fn kfd_process(reader: &mut Reader<'_>, pid: u32) -> Option<KfdProcess> {
    let dir = reader.root.path(format!("/sys/class/kfd/kfd/proc/{pid}"));
    let entries = reader.dir(&dir)?;
    let mut kfd = KfdProcess {
        pasid: reader.parsed(&dir.join("pasid"), parse_number::<u32>),
        ..KfdProcess::default()
    };
    for (name, path) in entries {
        if name.starts_with("vram_")
            && let Some(bytes) = reader.parsed(&path, parse_number::<u64>)
        {
            kfd.vram_bytes = Some(kfd.vram_bytes.unwrap_or(0).saturating_add(bytes));
        } else if name.starts_with("stats_")
            && let Some(ms) = reader.parsed(&path.join("evicted_ms"), parse_number::<u64>)
        {
            kfd.evicted_ms = Some(kfd.evicted_ms.unwrap_or(0).saturating_add(ms));
        }
    }
    Some(kfd)
}

/// Where a process (or thread) runs: its container and pod, as fields of an event that names
/// it (`container_id`, `pod_uid`, `pod` = `namespace/name`), and for a thread its process
/// (`tgid`: the kernel names a faulting thread, a person the process); empty for a process
/// outside Kubernetes, or one that is gone.
pub fn placement_fields(reader: &mut Reader<'_>, pid: u32) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let dir = reader.root.proc().join(pid.to_string());
    let tgid = reader.text(&dir.join("status")).and_then(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
    });
    if let Some(tgid) = tgid.filter(|t| *t != pid) {
        fields.insert("tgid".to_owned(), tgid.to_string());
    }
    let Some(cgroup) = reader.text(&dir.join("cgroup")) else {
        return fields;
    };
    let placement = placement(&cgroup);
    if let Some(uid) = &placement.pod_uid {
        if let Some(pod) = pod_names(reader).remove(uid) {
            fields.insert("pod".to_owned(), pod);
        }
        fields.insert("pod_uid".to_owned(), uid.clone());
    }
    if let Some(id) = placement.container_id {
        fields.insert("container_id".to_owned(), id);
    }
    fields
}

/// Pod UID → `namespace/name`, from the kubelet's log directories (`<ns>_<name>_<uid>`).
fn pod_names(reader: &mut Reader<'_>) -> HashMap<String, String> {
    let dir = reader.root.var_log_pods();
    reader
        .dir(&dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, _)| {
            let (rest, uid) = name.rsplit_once('_')?;
            let (namespace, pod) = rest.split_once('_')?;
            Some((uid.to_owned(), format!("{namespace}/{pod}")))
        })
        .collect()
}

/// A pod UID: 36 characters of hex digits and dashes (underscores under systemd).
fn is_uid(text: &str) -> bool {
    text.len() == 36
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn inference_programs_by_exe_comm_or_runner_arguments() {
        let args = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            inference_program("llama-server", &args("/app/llama-server -m x.gguf")),
            Some("llama-server")
        );
        // comm cut to 15 bytes, exe renamed by a wrapper.
        assert_eq!(
            inference_program("ollama_llama_se", &args("/usr/lib/runner --port 1")),
            Some("ollama_llama_server")
        );
        assert_eq!(
            inference_program("ollama", &args("/usr/bin/ollama runner --model m")),
            Some("ollama runner")
        );
        assert_eq!(
            inference_program("ollama", &args("/usr/bin/ollama serve")),
            None
        );
        assert_eq!(
            inference_program("bash", &args("bash -c llama-server")),
            None
        );
    }

    #[test]
    fn only_names_that_may_be_ours_get_their_arguments_read() {
        assert!(may_be_inference_program("llama-server", ""));
        assert!(may_be_inference_program(
            "python3",
            "/app/llama-server (deleted)"
        ));
        assert!(may_be_inference_program("ollama", "/usr/bin/ollama"));
        assert!(!may_be_inference_program(
            "rocm-smi",
            "/opt/rocm/bin/rocm-smi"
        ));
        assert!(!may_be_inference_program("kworker/0:1", ""));
    }

    #[test]
    fn only_allowlisted_variables_leave_the_node() {
        let environ = b"HSA_ENABLE_SDMA=0\0API_TOKEN=secret\0GGML_CUDA_ENABLE_UNIFIED_MEMORY=1\0AMD_LOG_LEVEL=3\0AMD_SECRET=x\0PATH=/bin\0LLAMA_ARG_LOG_VERBOSITY=4\0\xff\xfe=bad\0";
        let env = allowed_env(environ);
        assert_eq!(
            env.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "AMD_LOG_LEVEL",
                "GGML_CUDA_ENABLE_UNIFIED_MEMORY",
                "HSA_ENABLE_SDMA",
                "LLAMA_ARG_LOG_VERBOSITY"
            ]
        );
        assert!(!format!("{env:?}").contains("secret"));
    }

    #[test]
    fn secrets_in_arguments_and_allowlisted_variables_are_redacted_where_read() {
        let args = split_cmdline(
            b"/app/llama-server\0-m\0/models/q.gguf\0--api-key\0sk-live-0123456789abcdefghijklmnopqrstuv\0--hf-token=hf_abcdefghijklmnopqrstuvwxyzABCDEFGH\0-lv\x004\0",
        );
        assert_eq!(
            args,
            [
                "/app/llama-server",
                "-m",
                "/models/q.gguf",
                "--api-key",
                "<redacted:api-key>",
                "--hf-token=<redacted:hf-token>",
                "-lv",
                "4"
            ]
        );
        let env = allowed_env(
            b"LLAMA_ARG_API_KEY=k3y\0LLAMA_ARG_HF_TOKEN=hf_x\0LLAMA_ARG_MODEL_URL=https://b.s3.amazonaws.com/m.gguf?X-Amz-Signature=abc&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE\0HSA_ENABLE_SDMA=0\0",
        );
        assert_eq!(env["LLAMA_ARG_API_KEY"], "<redacted:api-key>");
        assert_eq!(env["LLAMA_ARG_HF_TOKEN"], "<redacted:hf-token>");
        assert_eq!(
            env["LLAMA_ARG_MODEL_URL"],
            "https://b.s3.amazonaws.com/m.gguf?X-Amz-Signature=<redacted:url-query>&X-Amz-Credential=<redacted:url-query>"
        );
        assert_eq!(env["HSA_ENABLE_SDMA"], "0");
    }

    #[test]
    fn an_event_pid_is_placed_in_its_container_and_pod() {
        let dir = tempfile::tempdir().unwrap();
        let id = "b".repeat(64);
        let uid = "0e6f1c52-9d4b-4a7e-8c1f-2b3a4c5d6e7f";
        std::fs::create_dir_all(dir.path().join("proc/4250")).unwrap();
        std::fs::write(
            dir.path().join("proc/4250/cgroup"),
            format!("0::/kubepods/burstable/pod{uid}/{id}\n"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join(format!("var/log/pods/llm_llama-0_{uid}")))
            .unwrap();
        // 4250 is a thread of process 4242.
        std::fs::write(
            dir.path().join("proc/4250/status"),
            "Name:\tllama-server\nTgid:\t4242\nPid:\t4250\n",
        )
        .unwrap();
        let root = crate::HostRoot::new(dir.path());
        let mut reader = Reader::new(&root);
        let fields = placement_fields(&mut reader, 4250);
        assert_eq!(fields.get("tgid").map(String::as_str), Some("4242"));
        assert_eq!(fields.get("pod").map(String::as_str), Some("llm/llama-0"));
        assert_eq!(fields.get("pod_uid").map(String::as_str), Some(uid));
        assert_eq!(fields.get("container_id"), Some(&id));
        // A pid that is gone places nowhere.
        assert!(placement_fields(&mut reader, 9999).is_empty());
    }

    #[test]
    fn container_and_pod_from_cgroupfs_and_systemd_paths() {
        let id = "a".repeat(64);
        let cgroupfs =
            format!("0::/kubepods/burstable/pod0e6f1c52-9d4b-4a7e-8c1f-2b3a4c5d6e7f/{id}\n");
        assert_eq!(
            placement(&cgroupfs),
            Placement {
                container_id: Some(id.clone()),
                pod_uid: Some("0e6f1c52-9d4b-4a7e-8c1f-2b3a4c5d6e7f".to_owned())
            }
        );
        let systemd = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0e6f1c52_9d4b_4a7e_8c1f_2b3a4c5d6e7f.slice/cri-containerd-{id}.scope\n"
        );
        assert_eq!(placement(&systemd), placement(&cgroupfs));
        assert_eq!(
            placement("0::/user.slice/session-2.scope\n"),
            Placement::default()
        );
        assert_eq!(
            split_cmdline(b"llama-server\0-m\0x.gguf\0"),
            ["llama-server", "-m", "x.gguf"]
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = allowed_env(&bytes);
            let args = split_cmdline(&bytes);
            let _ = inference_program(&String::from_utf8_lossy(&bytes), &args);
            let _ = placement(&String::from_utf8_lossy(&bytes));
        }
    }
}
