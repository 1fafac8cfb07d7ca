//! The LLM inference processes of a node as agent and client hold them: what each runs, where, and what its threads and the GPU memory are doing.
//!
//! The environment held here is the allowlisted part only: the agent drops every other variable
//! before anything leaves the node. Arguments and variables come with their credentials already
//! replaced by the agent (`--api-key <redacted:api-key>`): nothing here needs redacting again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::snapshot::Problem;

/// CPU use over the window above which a process counts as spinning: most of one core.
const SPINNING_CPU_SHARE: f64 = 0.5;
/// Growth of GPU memory over the window that counts as a load in progress (a slow upload on
/// UMA still moves tens of MiB a second).
const RISING_MEMORY_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InferenceProcesses {
    /// RFC 3339 UTC.
    pub taken_at: String,
    /// The window CPU time and memory were watched over; 0: one reading.
    pub sample_ms: u32,
    pub processes: Vec<InferenceProcess>,
    pub cards: Vec<CardMemoryTrend>,
    pub problems: Vec<Problem>,
    /// Processes beyond the agent's bound, not listed.
    #[serde(default, skip_serializing_if = "crate::is_zero")]
    pub processes_not_listed: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InferenceProcess {
    pub pid: u32,
    /// `llama-server`, `llama-cli`, `llama-bench`, `ollama runner`, `ollama_llama_server`.
    pub program: String,
    pub comm: String,
    /// Credentials redacted: the flag stays, its value is `<redacted:KIND>`.
    pub args: Vec<String>,
    /// Allowlisted variables only, credentials redacted.
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// State letter as /proc prints it.
    pub state: String,
    pub threads: Vec<ProcessThread>,
    pub threads_total: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms_in_sample: Option<u64>,
    pub kfd_handles: u32,
    pub dri_handles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kfd: Option<KfdProcess>,
    /// RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessThread {
    pub tid: u32,
    pub name: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_kfd_ioctl: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms_in_sample: Option<u64>,
}

/// Kernel functions a thread sleeps in while it waits for work: locks and condition variables,
/// polling, sockets, pipes, timers. A main thread asleep anywhere else is held by the kernel.
const WAITS_FOR_WORK: [&str; 18] = [
    "futex",
    "do_epoll_wait",
    "ep_poll",
    "do_sys_poll",
    "poll_schedule_timeout",
    "do_select",
    "core_sys_select",
    "hrtimer_nanosleep",
    "do_nanosleep",
    "schedule_hrtimeout",
    "pipe_read",
    "pipe_wait",
    "unix_stream",
    "inet_csk_accept",
    "sk_wait_data",
    "wait_woken",
    "do_sigtimedwait",
    "do_wait",
];

impl ProcessThread {
    /// In uninterruptible sleep, or (the main thread, `tid == pid`) asleep in the kernel on
    /// something other than waiting for work.
    pub fn is_blocked(&self, pid: u32) -> bool {
        if self.state == "D" {
            return true;
        }
        self.tid == pid
            && self.state == "S"
            && self
                .wchan
                .as_deref()
                .is_some_and(|w| !WAITS_FOR_WORK.iter().any(|idle| w.starts_with(idle)))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KfdProcess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pasid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted_ms_in_sample: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardMemoryTrend {
    pub card: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_used_bytes_start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_used_bytes_end: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtt_used_bytes_start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtt_used_bytes_end: Option<u64>,
}

/// Which way a card's GPU memory went over the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryTrend {
    Rising,
    Flat,
    Falling,
}

impl CardMemoryTrend {
    /// VRAM and GTT together: on a UMA APU a load fills GTT, on a carve-out VRAM first.
    /// `None` when no window was watched or a reading is missing.
    pub fn trend(&self) -> Option<MemoryTrend> {
        let start = self.vram_used_bytes_start? + self.gtt_used_bytes_start?;
        let end = self.vram_used_bytes_end? + self.gtt_used_bytes_end?;
        Some(if end >= start.saturating_add(RISING_MEMORY_BYTES) {
            MemoryTrend::Rising
        } else if start >= end.saturating_add(RISING_MEMORY_BYTES) {
            MemoryTrend::Falling
        } else {
            MemoryTrend::Flat
        })
    }

    /// Growth over the window, in bytes (negative: freed).
    pub fn growth_bytes(&self) -> Option<i128> {
        let start = self.vram_used_bytes_start? + self.gtt_used_bytes_start?;
        let end = self.vram_used_bytes_end? + self.gtt_used_bytes_end?;
        Some(i128::from(end) - i128::from(start))
    }
}

/// What a process is doing, from its state, its threads and its CPU time over the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Stopped by a signal or a debugger (`T`/`t`).
    Stopped,
    /// A thread waits in an ioctl on /dev/kfd: a GPU operation the driver has not finished.
    BlockedInKfd,
    /// A thread in uninterruptible sleep (`D`) elsewhere, or the main thread asleep in the
    /// kernel on something that is not waiting for work (a file read, a fence).
    BlockedInKernel,
    /// Most of a core busy: a busy-wait (ROCr's `hsa_signal_wait`) or real work.
    Spinning,
    /// Asleep and using (almost) no CPU.
    Idle,
    /// Running, but no window was watched to tell spinning from idle.
    Running,
    Zombie,
}

impl Activity {
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Stopped => "stopped",
            Activity::BlockedInKfd => "blocked_in_kfd",
            Activity::BlockedInKernel => "blocked_in_kernel",
            Activity::Spinning => "spinning",
            Activity::Idle => "idle",
            Activity::Running => "running",
            Activity::Zombie => "zombie",
        }
    }
}

impl InferenceProcess {
    pub fn activity(&self, sample_ms: u32) -> Activity {
        match self.state.as_str() {
            "T" | "t" => return Activity::Stopped,
            "Z" | "X" => return Activity::Zombie,
            _ => {}
        }
        if self.threads.iter().any(|t| t.in_kfd_ioctl) {
            return Activity::BlockedInKfd;
        }
        if self.threads.iter().any(|t| t.is_blocked(self.pid)) {
            return Activity::BlockedInKernel;
        }
        match self.cpu_ms_in_sample {
            Some(cpu) if sample_ms > 0 => {
                if cpu as f64 >= f64::from(sample_ms) * SPINNING_CPU_SHARE {
                    Activity::Spinning
                } else {
                    Activity::Idle
                }
            }
            _ if self.threads.iter().any(|t| t.state == "R") || self.state == "R" => {
                Activity::Running
            }
            _ => Activity::Idle,
        }
    }

    /// The value of an argument given as `--flag value`, `--flag=value` or `-f value`.
    pub fn arg_value(&self, names: &[&str]) -> Option<&str> {
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            for name in names {
                if arg == name {
                    return args.next().map(String::as_str);
                }
                if let Some(value) = arg
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('='))
                {
                    return Some(value);
                }
            }
        }
        None
    }

    /// Whether a flag appears among the arguments.
    pub fn has_arg(&self, names: &[&str]) -> bool {
        self.args.iter().any(|arg| {
            names.iter().any(|name| {
                arg == name || arg.strip_prefix(name).is_some_and(|r| r.starts_with('='))
            })
        })
    }
}

/// The end of one pod container's log, as the agent found it under `/var/log/pods`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodLog {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// Host path of the file read.
    pub path: String,
    /// The last bytes of the file, from a line start.
    #[serde(skip)]
    pub tail: Vec<u8>,
    /// Bytes before the tail that were not sent.
    pub bytes_skipped: u64,
    /// RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn thread(state: &str, kfd: bool) -> ProcessThread {
        ProcessThread {
            tid: 1,
            name: "llama-server".into(),
            state: state.into(),
            in_kfd_ioctl: kfd,
            ..Default::default()
        }
    }

    #[test]
    fn activity_from_state_threads_and_cpu() {
        let mut p = InferenceProcess {
            state: "S".into(),
            threads: vec![thread("S", false)],
            cpu_ms_in_sample: Some(990),
            ..Default::default()
        };
        assert_eq!(p.activity(1000), Activity::Spinning);
        p.cpu_ms_in_sample = Some(3);
        assert_eq!(p.activity(1000), Activity::Idle);
        p.threads.push(thread("D", true));
        assert_eq!(p.activity(1000), Activity::BlockedInKfd);
        p.threads[1].in_kfd_ioctl = false;
        assert_eq!(p.activity(1000), Activity::BlockedInKernel);
        p.state = "T".into();
        assert_eq!(p.activity(1000), Activity::Stopped);
    }

    #[test]
    fn memory_trend_needs_both_readings() {
        let mut t = CardMemoryTrend {
            card: "card1".into(),
            vram_used_bytes_start: Some(0),
            vram_used_bytes_end: Some(0),
            gtt_used_bytes_start: Some(1 << 30),
            gtt_used_bytes_end: Some((1 << 30) + (64 << 20)),
        };
        assert_eq!(t.trend(), Some(MemoryTrend::Rising));
        t.gtt_used_bytes_end = Some(1 << 30);
        assert_eq!(t.trend(), Some(MemoryTrend::Flat));
        t.gtt_used_bytes_end = None;
        assert_eq!(t.trend(), None);
    }

    #[test]
    fn argument_values_in_every_form() {
        let p = InferenceProcess {
            args: [
                "llama-server",
                "-m",
                "/m.gguf",
                "--load-mode=none",
                "--api-key",
                "<redacted:api-key>",
                "--no-mmap",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        };
        assert_eq!(p.arg_value(&["-m", "--model"]), Some("/m.gguf"));
        assert_eq!(p.arg_value(&["-lm", "--load-mode"]), Some("none"));
        assert!(p.has_arg(&["--no-mmap"]));
        assert!(!p.has_arg(&["-fa"]));
        // As the agent redacts it: the flag still says the server takes a key.
        assert!(p.has_arg(&["--api-key"]));
    }
}
