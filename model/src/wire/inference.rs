//! Conversions between the inference-process model and its nodectl.v1 wire form, lossless both ways.

use nodectl_proto::nodectl::v1 as pb;

use super::{WireError, invalid, timestamp_from_pb, timestamp_to_pb};
use crate::inference as model;
use crate::snapshot::Problem;

fn time_to_pb(text: &str) -> Option<prost_types::Timestamp> {
    text.parse::<jiff::Timestamp>().ok().map(timestamp_to_pb)
}

fn time_from_pb(
    t: Option<prost_types::Timestamp>,
    field: &'static str,
) -> Result<Option<String>, WireError> {
    t.map(|t| timestamp_from_pb(t, field).map(|t| t.to_string()))
        .transpose()
}

pub(crate) fn problem_to_pb(p: Problem) -> pb::Problem {
    pb::Problem {
        path: p.path,
        reason: p.reason,
    }
}

pub(crate) fn problem_from_pb(p: pb::Problem) -> Problem {
    Problem {
        path: p.path,
        reason: p.reason,
    }
}

impl From<model::InferenceProcesses> for pb::InferenceProcesses {
    fn from(p: model::InferenceProcesses) -> Self {
        pb::InferenceProcesses {
            taken_at: time_to_pb(&p.taken_at),
            sample_ms: p.sample_ms,
            processes: p.processes.into_iter().map(Into::into).collect(),
            cards: p
                .cards
                .into_iter()
                .map(|c| pb::CardMemoryTrend {
                    card: c.card,
                    vram_used_bytes_start: c.vram_used_bytes_start,
                    vram_used_bytes_end: c.vram_used_bytes_end,
                    gtt_used_bytes_start: c.gtt_used_bytes_start,
                    gtt_used_bytes_end: c.gtt_used_bytes_end,
                })
                .collect(),
            problems: p.problems.into_iter().map(problem_to_pb).collect(),
            processes_not_listed: p.processes_not_listed,
        }
    }
}

impl TryFrom<pb::InferenceProcesses> for model::InferenceProcesses {
    type Error = WireError;

    fn try_from(p: pb::InferenceProcesses) -> Result<Self, Self::Error> {
        Ok(model::InferenceProcesses {
            taken_at: time_from_pb(p.taken_at, "taken_at")?.unwrap_or_default(),
            sample_ms: p.sample_ms,
            processes: p
                .processes
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            cards: p
                .cards
                .into_iter()
                .map(|c| model::CardMemoryTrend {
                    card: c.card,
                    vram_used_bytes_start: c.vram_used_bytes_start,
                    vram_used_bytes_end: c.vram_used_bytes_end,
                    gtt_used_bytes_start: c.gtt_used_bytes_start,
                    gtt_used_bytes_end: c.gtt_used_bytes_end,
                })
                .collect(),
            problems: p.problems.into_iter().map(problem_from_pb).collect(),
            processes_not_listed: p.processes_not_listed,
        })
    }
}

impl From<model::InferenceProcess> for pb::InferenceProcess {
    fn from(p: model::InferenceProcess) -> Self {
        pb::InferenceProcess {
            pid: p.pid,
            program: p.program,
            comm: p.comm,
            args: p.args,
            env: p.env.into_iter().collect(),
            container_id: p.container_id,
            pod_uid: p.pod_uid,
            pod: p.pod,
            state: p.state,
            threads: p
                .threads
                .into_iter()
                .map(|t| pb::ProcessThread {
                    tid: t.tid,
                    name: t.name,
                    state: t.state,
                    wchan: t.wchan,
                    in_kfd_ioctl: t.in_kfd_ioctl,
                    cpu_ms_in_sample: t.cpu_ms_in_sample,
                })
                .collect(),
            threads_total: p.threads_total,
            cpu_ms_in_sample: p.cpu_ms_in_sample,
            kfd_handles: p.kfd_handles,
            dri_handles: p.dri_handles,
            kfd: p.kfd.map(|k| pb::KfdProcess {
                pasid: k.pasid,
                vram_bytes: k.vram_bytes,
                evicted_ms: k.evicted_ms,
                evicted_ms_in_sample: k.evicted_ms_in_sample,
            }),
            started_at: p.started_at.as_deref().and_then(time_to_pb),
        }
    }
}

impl TryFrom<pb::InferenceProcess> for model::InferenceProcess {
    type Error = WireError;

    fn try_from(p: pb::InferenceProcess) -> Result<Self, Self::Error> {
        if p.pid == 0 {
            return Err(invalid("inference_processes.pid", "0 is not a process"));
        }
        Ok(model::InferenceProcess {
            pid: p.pid,
            program: p.program,
            comm: p.comm,
            args: p.args,
            env: p.env.into_iter().collect(),
            container_id: p.container_id,
            pod_uid: p.pod_uid,
            pod: p.pod,
            state: p.state,
            threads: p
                .threads
                .into_iter()
                .map(|t| model::ProcessThread {
                    tid: t.tid,
                    name: t.name,
                    state: t.state,
                    wchan: t.wchan,
                    in_kfd_ioctl: t.in_kfd_ioctl,
                    cpu_ms_in_sample: t.cpu_ms_in_sample,
                })
                .collect(),
            threads_total: p.threads_total,
            cpu_ms_in_sample: p.cpu_ms_in_sample,
            kfd_handles: p.kfd_handles,
            dri_handles: p.dri_handles,
            kfd: p.kfd.map(|k| model::KfdProcess {
                pasid: k.pasid,
                vram_bytes: k.vram_bytes,
                evicted_ms: k.evicted_ms,
                evicted_ms_in_sample: k.evicted_ms_in_sample,
            }),
            started_at: time_from_pb(p.started_at, "inference_processes.started_at")?,
        })
    }
}

impl From<model::PodLog> for pb::PodLog {
    fn from(p: model::PodLog) -> Self {
        pb::PodLog {
            modified_at: p.modified_at.as_deref().and_then(time_to_pb),
            namespace: p.namespace,
            pod: p.pod,
            pod_uid: p.pod_uid,
            container: p.container,
            path: p.path,
            tail: p.tail,
            bytes_skipped: p.bytes_skipped,
        }
    }
}

impl TryFrom<pb::PodLog> for model::PodLog {
    type Error = WireError;

    fn try_from(p: pb::PodLog) -> Result<Self, Self::Error> {
        Ok(model::PodLog {
            modified_at: time_from_pb(p.modified_at, "modified_at")?,
            namespace: p.namespace,
            pod: p.pod,
            pod_uid: p.pod_uid,
            container: p.container,
            path: p.path,
            tail: p.tail,
            bytes_skipped: p.bytes_skipped,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn model_survives_the_wire() {
        let p = model::InferenceProcesses {
            taken_at: "2026-12-01T14:30:00Z".into(),
            sample_ms: 1000,
            processes: vec![model::InferenceProcess {
                pid: 4242,
                program: "llama-server".into(),
                comm: "llama-server".into(),
                args: vec!["llama-server".into(), "-m".into(), "/m.gguf".into()],
                env: [("HSA_ENABLE_SDMA".to_owned(), "0".to_owned())].into(),
                container_id: Some("abc".into()),
                pod_uid: Some("0d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11".into()),
                pod: Some("llm/llama-0".into()),
                state: "S".into(),
                threads: vec![model::ProcessThread {
                    tid: 4243,
                    name: "llama-server".into(),
                    state: "D".into(),
                    wchan: Some("amdgpu_amdkfd_fence_wait".into()),
                    in_kfd_ioctl: true,
                    cpu_ms_in_sample: Some(0),
                }],
                threads_total: 17,
                cpu_ms_in_sample: Some(12),
                kfd_handles: 1,
                dri_handles: vec!["renderD128".into()],
                kfd: Some(model::KfdProcess {
                    pasid: Some(32770),
                    vram_bytes: Some(1 << 30),
                    evicted_ms: Some(5),
                    evicted_ms_in_sample: Some(0),
                }),
                started_at: Some("2026-12-01T14:29:00Z".into()),
            }],
            cards: vec![model::CardMemoryTrend {
                card: "card1".into(),
                vram_used_bytes_start: Some(1),
                vram_used_bytes_end: Some(2),
                gtt_used_bytes_start: Some(3),
                gtt_used_bytes_end: Some(4),
            }],
            problems: vec![Problem {
                path: "/proc/4242/environ".into(),
                reason: "cannot read".into(),
            }],
            processes_not_listed: 2,
        };
        let back = model::InferenceProcesses::try_from(pb::InferenceProcesses::from(p.clone()));
        assert_eq!(back.unwrap(), p);
    }

    #[test]
    fn a_process_without_pid_is_refused() {
        let e = model::InferenceProcess::try_from(pb::InferenceProcess::default()).unwrap_err();
        assert!(e.to_string().contains("pid"), "{e}");
    }
}
