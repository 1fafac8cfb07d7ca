//! A Strix Halo node tree where a llama-server pod hung minutes ago: its process in `proc/`, its CRI pod log under `var/log/pods`, and a MES hang with a GPU reset in the saved kernel log at the stall.
//!
//! Built at test time because everything is relative to now: the log must be older than the
//! stall threshold, and the kernel records are placed on the tree's boot clock so that the
//! incident's wall time falls 12 s after the last log line.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the pod's log stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopsIn {
    /// After the model buffers, in the progress dots of the upload.
    Upload,
    /// In `graph_reserve: reserving a graph`.
    GraphReserve,
    /// Somewhere after `loading model`, at the default verbosity: the log cannot tell where.
    Terse,
}

/// What the hung process runs with.
#[derive(Debug, Clone)]
pub struct HungNode {
    pub stops_in: StopsIn,
    /// `NAME=value` of the process's environment (all of it, allowlisted or not).
    pub environ: Vec<String>,
    /// How long ago the log's last line was written.
    pub stalled_for: Duration,
}

pub const PID: u32 = 4242;
pub const POD_UID: &str = "0d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11";
pub const CONTAINER_ID: &str = "5f4dcc3b5aa765d61d8327deb882cf995f4dcc3b5aa765d61d8327deb882cf99";

/// The lines of a ROCm llama-server start at `-lv 4`/`-lv 5` up to the stall (message part).
fn run_lines(stops_in: StopsIn) -> Vec<&'static str> {
    if stops_in == StopsIn::Terse {
        return vec![
            "0.00.001.139 I srv  llama_server: initializing ...",
            "0.00.003.170 I cmn  common_param: common_params_print_info: verbosity = 3 (adjust with the `-lv N` CLI arg)",
            "0.00.004.832 I srv    load_model: loading model '/models/Qwen3-30B-A3B-Q4_K_M.gguf'",
            "0.00.135.968 I cmn          init: llama threadpool init, n_threads = 16",
        ];
    }
    let mut lines = vec![
        "ggml_cuda_init: found 1 ROCm devices:",
        "  Device 0: AMD Radeon Graphics, gfx1151 (0x1151), VMM: no, Wave Size: 32",
        "0.00.001.139 I srv  llama_server: initializing ...",
        "0.00.003.170 I cmn  common_param: common_params_print_info: verbosity = 5 (adjust with the `-lv N` CLI arg)",
        "0.00.004.832 I srv    load_model: loading model '/models/Qwen3-30B-A3B-Q4_K_M.gguf'",
        "0.00.120.000 I llama_model_loader: loaded meta data with 35 key-value pairs and 579 tensors from /models/Qwen3-30B-A3B-Q4_K_M.gguf (version GGUF V3 (latest))",
        "0.00.150.000 I print_info: file size   = 17.28 GiB (4.86 BPW)",
        "0.00.300.000 I load_tensors: loading model tensors, this can take a while... (load_mode = mmap)",
        "0.00.900.000 I load_tensors: offloading 48 repeating layers to GPU",
        "0.00.900.100 I load_tensors: offloaded 49/49 layers to GPU",
        "0.00.900.200 I load_tensors:        ROCm0 model buffer size = 17354.52 MiB",
        "0.00.900.300 I load_tensors:   CPU_Mapped model buffer size =   166.92 MiB",
        "0.00.950.000 D load_all_data: using async uploads for device ROCm0, buffer type ROCm0, backend ROCm0",
        "0.01.500.000 I ...............................................",
    ];
    if stops_in == StopsIn::GraphReserve {
        lines.extend([
            "0.40.000.000 I ..........................................................",
            "0.40.100.000 I llama_context: constructing llama_context",
            "0.40.100.100 I llama_context: n_ctx         = 32768",
            "0.40.100.200 I llama_context: flash_attn    = auto",
            "0.40.200.000 I llama_kv_cache:      ROCm0 KV buffer size =  3072.00 MiB",
            "0.40.300.000 I sched_reserve: reserving ...",
            "0.40.300.100 D graph_reserve: reserving a graph for ubatch with n_tokens =  512, n_seqs =  1, n_outputs =  512",
        ]);
    }
    lines
}

fn write(path: &Path, content: impl AsRef<[u8]>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, content)?;
    Ok(())
}

fn rfc3339_nanos(t: SystemTime) -> anyhow::Result<String> {
    let t = jiff::Timestamp::try_from(t)?;
    Ok(t.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string())
}

impl HungNode {
    /// Builds the tree from a copy of the `strix-halo-risky` fixture (`cwsr_enable=1`
    /// on a kernel without the CWSR fix, MES 0x83).
    /// The tree is `root/` of the returned directory.
    pub fn build(&self) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
        let dir = crate::harness::node_fixture_copy("strix-halo-risky")?;
        let root = dir.path().join("root");
        let now = SystemTime::now();
        let last_line_at = now - self.stalled_for;
        let lines = run_lines(self.stops_in);
        // The run started a while before its last line; one line every two seconds.
        let started = last_line_at - Duration::from_secs(2 * (lines.len() as u64 - 1));
        // Whole seconds: /proc/stat's btime has no fraction, so the tree's clock has none.
        let boot_secs = (now - Duration::from_secs(3600))
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_secs();
        let boot = SystemTime::UNIX_EPOCH + Duration::from_secs(boot_secs);
        write(
            &root.join("proc/stat"),
            format!("cpu  1 0 1 100 0 0 0 0 0 0\nbtime {boot_secs}\nprocesses 4300\n"),
        )?;
        // The tree's clock (boot time plus uptime) is the moment it was built.
        let uptime = now.duration_since(SystemTime::UNIX_EPOCH)?.as_secs_f64() - boot_secs as f64;
        write(
            &root.join("proc/uptime"),
            format!("{uptime:.2} {:.2}\n", uptime * 4.0),
        )?;

        // The CRI pod log, with one line split into partial parts as the kubelet does.
        let mut log = String::new();
        for (i, line) in lines.iter().enumerate() {
            let at = rfc3339_nanos(started + Duration::from_secs(2 * i as u64))?;
            if line.contains("loaded meta data") {
                let (a, b) = line.split_at(60);
                log.push_str(&format!("{at} stderr P {a}\n{at} stderr F {b}\n"));
            } else {
                log.push_str(&format!("{at} stderr F {line}\n"));
            }
        }
        let log_path = root.join(format!("var/log/pods/llm_llama-0_{POD_UID}/server/0.log"));
        write(&log_path, &log)?;
        std::fs::File::options()
            .write(true)
            .open(&log_path)?
            .set_modified(last_line_at)?;

        // The kernel log: the MES hang and the reset, 12 s after the last log line.
        let hang_usec = (last_line_at + Duration::from_secs(12))
            .duration_since(boot)?
            .as_micros() as u64;
        let device = " SUBSYSTEM=pci\n DEVICE=+pci:0000:c1:00.0\n";
        let records = [
            (
                6,
                3_201_000,
                "[drm] amdgpu kernel modesetting enabled.",
                false,
            ),
            (
                3,
                hang_usec,
                "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE",
                true,
            ),
            (
                3,
                hang_usec + 40,
                "amdgpu 0000:c1:00.0: amdgpu: failed to remove hardware queue from MES, doorbell=0x1002",
                true,
            ),
            (
                3,
                hang_usec + 80,
                "amdgpu 0000:c1:00.0: amdgpu: MES might be in unrecoverable state, issue a GPU reset",
                true,
            ),
            (
                6,
                hang_usec + 90_000,
                "amdgpu 0000:c1:00.0: amdgpu: GPU reset begin!",
                true,
            ),
            (
                6,
                hang_usec + 900_000,
                "amdgpu 0000:c1:00.0: amdgpu: GPU reset(1) succeeded!",
                true,
            ),
        ];
        let mut kmsg = String::new();
        for (seq, (level, usec, message, on_device)) in records.iter().enumerate() {
            kmsg.push_str(&format!("{level},{},{usec},-;{message}\n", seq + 1));
            if *on_device {
                kmsg.push_str(device);
            }
        }
        write(&root.join("dev/kmsg"), kmsg)?;

        // The process: llama-server in the pod's container, one thread spinning.
        let proc_dir = root.join(format!("proc/{PID}"));
        write(&proc_dir.join("comm"), "llama-server\n")?;
        let mut args = vec![
            "/app/llama-server",
            "-m",
            "/models/Qwen3-30B-A3B-Q4_K_M.gguf",
            "-ngl",
            "999",
            "--host",
            "0.0.0.0",
        ];
        // The verbose logs come from a server started at -lv 5; the terse one at the default.
        if self.stops_in != StopsIn::Terse {
            args.extend(["-lv", "5"]);
        }
        write(&proc_dir.join("cmdline"), format!("{}\0", args.join("\0")))?;
        write(
            &proc_dir.join("environ"),
            format!("{}\0", self.environ.join("\0")),
        )?;
        write(
            &proc_dir.join("cgroup"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CONTAINER_ID}.scope\n",
                POD_UID.replace('-', "_")
            ),
        )?;
        let started_ticks = (started.duration_since(boot)?.as_millis() / 10) as u64;
        let stat = |tid: u32, name: &str, state: char| {
            format!(
                "{tid} ({name}) {state} 1 {PID} {PID} 0 -1 4194560 1000 0 0 0 5000 300 0 0 20 0 3 0 {started_ticks} 1000000 1000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 3 0 0 0 0 0\n"
            )
        };
        write(&proc_dir.join("stat"), stat(PID, "llama-server", 'S'))?;
        let threads = [
            (PID, "llama-server", 'R', "0", "running"),
            (
                PID + 1,
                "llama-server",
                'S',
                "futex_wait_queue",
                "202 0x7f 0x80 0x0 0x0 0x0 0x0 0x7ffd 0x7f",
            ),
            (
                PID + 2,
                "llama-server",
                'S',
                "amdgpu_amdkfd_fence_wait",
                "16 0x5 0xc0184b0c 0x7ffd 0x0 0x0 0x0 0x7ffd 0x7f",
            ),
        ];
        for (tid, name, state, wchan, syscall) in threads {
            let task = proc_dir.join(format!("task/{tid}"));
            write(&task.join("stat"), stat(tid, name, state))?;
            write(&task.join("wchan"), wchan)?;
            write(&task.join("syscall"), format!("{syscall}\n"))?;
        }
        let fd = proc_dir.join("fd");
        std::fs::create_dir_all(&fd)?;
        for (n, target) in [
            ("0", "/dev/null"),
            ("5", "/dev/kfd"),
            ("6", "/dev/dri/renderD128"),
        ] {
            std::os::unix::fs::symlink(target, fd.join(n))?;
        }
        let kfd = root.join(format!("sys/class/kfd/kfd/proc/{PID}"));
        write(&kfd.join("pasid"), "32770\n")?;
        write(&kfd.join("vram_53241"), "18198265856\n")?;
        write(&kfd.join("stats_53241/evicted_ms"), "0\n")?;
        Ok((dir, root))
    }
}
