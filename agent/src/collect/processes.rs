//! Which host processes are LLM inference servers (llama.cpp, ollama runners), which container and pod they run in, and the part of their environment that may leave the node.
//!
//! Pure functions over the bytes of `/proc/PID/{comm,cmdline,environ,cgroup}`; the collector
//! that reads them (through the bounded, deadline-guarded reader) builds on these.

use std::collections::BTreeMap;

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

/// `/proc/PID/cmdline`: NUL-separated arguments (a trailing NUL ends the last).
pub fn split_cmdline(bytes: &[u8]) -> Vec<String> {
    bytes
        .strip_suffix(b"\0")
        .unwrap_or(bytes)
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// `/proc/PID/environ` restricted to the allowlist; everything else is dropped here, on the node.
pub fn allowed_env(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let entry = std::str::from_utf8(entry).ok()?;
            let (name, value) = entry.split_once('=')?;
            let allowed = ENV_NAMES.contains(&name)
                || ENV_PREFIXES.iter().any(|prefix| name.starts_with(prefix));
            allowed.then(|| (name.to_owned(), value.to_owned()))
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
