//! Conversions between the snapshot model and its nodectl.v1 wire form, lossless both ways.

use std::collections::BTreeMap;

use nodectl_proto::nodectl::v1 as pb;

use super::{WireError, invalid};
use crate::snapshot as model;

// ---- model → wire -------------------------------------------------------------------------

/// By value: a snapshot is sent once, so its strings move into the message instead of being copied.
impl From<model::Snapshot> for pb::Snapshot {
    fn from(s: model::Snapshot) -> Self {
        pb::Snapshot {
            taken_at: s
                .taken_at
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|t| prost_types::Timestamp {
                    seconds: t.as_second(),
                    nanos: t.subsec_nanosecond(),
                }),
            agent_version: s.agent_version,
            host: Some(host_to_pb(s.host)),
            cards: s.cards.into_iter().map(card_to_pb).collect(),
            amdgpu_parameters: params_to_pb(s.module_parameters.amdgpu),
            ttm_parameters: params_to_pb(s.module_parameters.ttm),
            kfd_nodes: s
                .kfd_nodes
                .into_iter()
                .map(|n| pb::KfdNode {
                    node_id: n.node_id,
                    gpu_id: n.gpu_id,
                    name: n.name,
                    gfx_target: n.gfx_target,
                    properties: n.properties.into_iter().collect(),
                    has_cwsr_size: n.has_cwsr_size,
                })
                .collect(),
            findings: s
                .findings
                .into_iter()
                .map(|f| pb::Finding {
                    id: f.id,
                    severity: severity_to_pb(f.severity) as i32,
                    title: f.title,
                    evidence: f.evidence,
                    references: f.references,
                    remedy: f.remedy,
                    card: f.card,
                    severity_if_found: f.severity_if_found.map(|s| severity_to_pb(s) as i32),
                })
                .collect(),
            problems: s
                .problems
                .into_iter()
                .map(super::inference::problem_to_pb)
                .collect(),
            inference_processes: s.inference_processes.into_iter().map(Into::into).collect(),
            inference_processes_not_listed: s.inference_processes_not_listed,
        }
    }
}

fn severity_to_pb(severity: model::Severity) -> pb::Severity {
    match severity {
        model::Severity::Info => pb::Severity::Info,
        model::Severity::Warning => pb::Severity::Warning,
        model::Severity::Unknown => pb::Severity::Unknown,
        model::Severity::Critical => pb::Severity::Critical,
    }
}

fn severity_from_pb(value: i32, field: &'static str) -> Result<model::Severity, WireError> {
    match pb::Severity::try_from(value) {
        Ok(pb::Severity::Info) => Ok(model::Severity::Info),
        Ok(pb::Severity::Warning) => Ok(model::Severity::Warning),
        Ok(pb::Severity::Unknown) => Ok(model::Severity::Unknown),
        Ok(pb::Severity::Critical) => Ok(model::Severity::Critical),
        _ => Err(invalid(
            field,
            format!("{value} is not info, warning, unknown or critical"),
        )),
    }
}

fn host_to_pb(h: model::Host) -> pb::Host {
    pb::Host {
        hostname: h.hostname,
        kernel_release: h.kernel_release,
        boot_id: h.boot_id,
        cmdline: h.cmdline,
        kernel_arguments: h
            .kernel_arguments
            .into_iter()
            .map(|a| pb::KernelArgument {
                key: a.key,
                value: a.value,
            })
            .collect(),
        os_release: h.os_release.map(|o| pb::OsRelease {
            id: o.id,
            name: o.name,
            version_id: o.version_id,
            pretty_name: o.pretty_name,
            talos_version: o.talos_version,
        }),
        mem_total_bytes: h.mem_total_bytes,
        mem_available_bytes: h.mem_available_bytes,
        uptime_usec: h.uptime_usec,
    }
}

fn params_to_pb(
    params: BTreeMap<String, model::ParameterValue>,
) -> BTreeMap<String, pb::ParameterValue> {
    params
        .into_iter()
        .map(|(name, value)| {
            use pb::parameter_value::Value;
            let raw = value.raw();
            let typed = match value {
                model::ParameterValue::Integer(v) => Value::Integer(v),
                model::ParameterValue::Unsigned(v) => Value::Unsigned(v),
                model::ParameterValue::Flag(v) => Value::Flag(v),
                model::ParameterValue::Hex(_) => Value::Hex(value.hex_value().unwrap_or(0)),
                model::ParameterValue::Text(s) => Value::Text(s),
            };
            (
                name,
                pb::ParameterValue {
                    value: Some(typed),
                    raw,
                },
            )
        })
        .collect()
}

fn card_to_pb(c: model::Card) -> pb::Card {
    pb::Card {
        name: c.name,
        bdf: c.bdf,
        pci_id: c.pci_id,
        gfx_target: c.gfx_target,
        render_minor: c.render_minor,
        vbios_version: c.vbios_version,
        firmware: c.firmware,
        debugfs_firmware: c
            .debugfs_firmware
            .into_iter()
            .map(|f| pb::DebugfsFirmware {
                name: f.name,
                feature_version: f.feature_version,
                firmware_version: f.firmware_version,
                program: f.program,
            })
            .collect(),
        dpm_clocks: c
            .dpm_clocks
            .into_iter()
            .map(|(domain, levels)| pb::DpmClock {
                domain,
                levels: levels
                    .into_iter()
                    .map(|l| pb::DpmLevel {
                        index: l.index,
                        mhz: l.mhz,
                        current: l.current,
                    })
                    .collect(),
            })
            .collect(),
        performance_level: c.performance_level,
        gpu_busy_percent: c.gpu_busy_percent,
        mem_busy_percent: c.mem_busy_percent,
        hwmon: c.hwmon.map(|h| pb::Hwmon {
            name: h.name,
            temp_edge_millicelsius: h.temp_edge_millicelsius,
            power_microwatts: h.power_microwatts,
            power_source: h.power_source,
            sclk_hz: h.sclk_hz,
            vddgfx_millivolts: h.vddgfx_millivolts,
            vddnb_millivolts: h.vddnb_millivolts,
        }),
        memory: Some(pb::Memory {
            vram_total_bytes: c.memory.vram_total_bytes,
            vram_used_bytes: c.memory.vram_used_bytes,
            vis_vram_total_bytes: c.memory.vis_vram_total_bytes,
            vis_vram_used_bytes: c.memory.vis_vram_used_bytes,
            gtt_total_bytes: c.memory.gtt_total_bytes,
            gtt_used_bytes: c.memory.gtt_used_bytes,
        }),
        gpu_metrics: c.gpu_metrics.map(|g| pb::GpuMetrics {
            structure_size: g.structure_size,
            format_revision: g.format_revision,
            content_revision: g.content_revision,
            supported: g.supported,
            fields: g
                .fields
                .into_iter()
                .map(|f| pb::MetricField {
                    absent_indexes: f
                        .values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_none())
                        .filter_map(|(i, _)| u32::try_from(i).ok())
                        .collect(),
                    values: f.values.into_iter().flatten().collect(),
                    name: f.name,
                })
                .collect(),
        }),
        samples: c
            .samples
            .into_iter()
            .map(|s| pb::ClockSample {
                offset_ms: s.offset_ms,
                gpu_busy_percent: s.gpu_busy_percent,
                sclk_mhz: s.sclk_mhz,
                sclk_at_lowest_level: s.sclk_at_lowest_level,
                performance_level: s.performance_level,
            })
            .collect(),
    }
}

// ---- wire → model -------------------------------------------------------------------------

impl TryFrom<pb::Snapshot> for model::Snapshot {
    type Error = WireError;

    fn try_from(s: pb::Snapshot) -> Result<Self, Self::Error> {
        let taken_at = match s.taken_at {
            Some(t) => jiff::Timestamp::new(t.seconds, t.nanos)
                .map_err(|e| invalid("taken_at", e.to_string()))?
                .to_string(),
            None => String::new(),
        };
        Ok(model::Snapshot {
            agent_version: s.agent_version,
            taken_at,
            host: host_from_pb(s.host.unwrap_or_default()),
            cards: s
                .cards
                .into_iter()
                .map(card_from_pb)
                .collect::<Result<_, _>>()?,
            module_parameters: model::ModuleParameters {
                amdgpu: params_from_pb(s.amdgpu_parameters)?,
                ttm: params_from_pb(s.ttm_parameters)?,
            },
            kfd_nodes: s
                .kfd_nodes
                .into_iter()
                .map(|n| model::KfdNode {
                    node_id: n.node_id,
                    gpu_id: n.gpu_id,
                    name: n.name,
                    gfx_target: n.gfx_target,
                    properties: n.properties.into_iter().collect(),
                    has_cwsr_size: n.has_cwsr_size,
                })
                .collect(),
            findings: s
                .findings
                .into_iter()
                .map(|f| {
                    let severity = severity_from_pb(f.severity, "findings.severity")?;
                    let severity_if_found = f
                        .severity_if_found
                        .map(|s| severity_from_pb(s, "findings.severity_if_found"))
                        .transpose()?;
                    Ok(model::Finding {
                        id: f.id,
                        severity,
                        title: f.title,
                        evidence: f.evidence,
                        references: f.references,
                        remedy: f.remedy,
                        card: f.card,
                        severity_if_found,
                    })
                })
                .collect::<Result<_, _>>()?,
            problems: s
                .problems
                .into_iter()
                .map(super::inference::problem_from_pb)
                .collect(),
            inference_processes: s
                .inference_processes
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            inference_processes_not_listed: s.inference_processes_not_listed,
        })
    }
}

fn host_from_pb(h: pb::Host) -> model::Host {
    model::Host {
        hostname: h.hostname,
        kernel_release: h.kernel_release,
        boot_id: h.boot_id,
        cmdline: h.cmdline,
        kernel_arguments: h
            .kernel_arguments
            .into_iter()
            .map(|a| model::KernelArgument {
                key: a.key,
                value: a.value,
            })
            .collect(),
        os_release: h.os_release.map(|o| model::OsRelease {
            id: o.id,
            name: o.name,
            version_id: o.version_id,
            pretty_name: o.pretty_name,
            talos_version: o.talos_version,
        }),
        mem_total_bytes: h.mem_total_bytes,
        mem_available_bytes: h.mem_available_bytes,
        uptime_usec: h.uptime_usec,
    }
}

fn params_from_pb(
    params: BTreeMap<String, pb::ParameterValue>,
) -> Result<BTreeMap<String, model::ParameterValue>, WireError> {
    use pb::parameter_value::Value;
    params
        .into_iter()
        .map(|(name, p)| {
            let value = match p.value {
                Some(Value::Integer(v)) => model::ParameterValue::Integer(v),
                Some(Value::Unsigned(v)) => model::ParameterValue::Unsigned(v),
                Some(Value::Flag(v)) => model::ParameterValue::Flag(v),
                Some(Value::Hex(v)) => {
                    // `raw` keeps the printed width; fall back to the value when it is missing.
                    if model::ParameterValue::parse(&p.raw).hex_value() == Some(v) {
                        model::ParameterValue::Hex(p.raw)
                    } else {
                        model::ParameterValue::Hex(format!("0x{v:08x}"))
                    }
                }
                Some(Value::Text(s)) => model::ParameterValue::Text(s),
                None => {
                    return Err(invalid(
                        "parameters.value",
                        format!("parameter {name} has no value"),
                    ));
                }
            };
            Ok((name, value))
        })
        .collect()
}

fn metric_values(f: &pb::MetricField) -> Result<Vec<Option<u64>>, WireError> {
    let total = f.values.len() + f.absent_indexes.len();
    let mut out = Vec::with_capacity(total);
    let mut present = f.values.iter();
    let mut absent = f.absent_indexes.iter().peekable();
    for i in 0..total {
        if absent
            .peek()
            .is_some_and(|a| usize::try_from(**a).ok() == Some(i))
        {
            absent.next();
            out.push(None);
        } else {
            out.push(present.next().copied());
        }
    }
    if absent.next().is_some() || present.next().is_some() {
        return Err(invalid(
            "gpu_metrics.fields.absent_indexes",
            format!("{}: indexes out of order or out of range", f.name),
        ));
    }
    Ok(out)
}

fn card_from_pb(c: pb::Card) -> Result<model::Card, WireError> {
    let memory = c.memory.unwrap_or_default();
    Ok(model::Card {
        name: c.name,
        bdf: c.bdf,
        pci_id: c.pci_id,
        gfx_target: c.gfx_target,
        render_minor: c.render_minor,
        vbios_version: c.vbios_version,
        firmware: c.firmware.into_iter().collect(),
        debugfs_firmware: c
            .debugfs_firmware
            .into_iter()
            .map(|f| model::DebugfsFirmware {
                name: f.name,
                feature_version: f.feature_version,
                firmware_version: f.firmware_version,
                program: f.program,
            })
            .collect(),
        dpm_clocks: c
            .dpm_clocks
            .into_iter()
            .map(|d| {
                (
                    d.domain,
                    d.levels
                        .into_iter()
                        .map(|l| model::DpmLevel {
                            index: l.index,
                            mhz: l.mhz,
                            current: l.current,
                        })
                        .collect(),
                )
            })
            .collect(),
        performance_level: c.performance_level,
        gpu_busy_percent: c.gpu_busy_percent,
        mem_busy_percent: c.mem_busy_percent,
        hwmon: c.hwmon.map(|h| model::Hwmon {
            name: h.name,
            temp_edge_millicelsius: h.temp_edge_millicelsius,
            power_microwatts: h.power_microwatts,
            power_source: h.power_source,
            sclk_hz: h.sclk_hz,
            vddgfx_millivolts: h.vddgfx_millivolts,
            vddnb_millivolts: h.vddnb_millivolts,
        }),
        memory: model::Memory {
            vram_total_bytes: memory.vram_total_bytes,
            vram_used_bytes: memory.vram_used_bytes,
            vis_vram_total_bytes: memory.vis_vram_total_bytes,
            vis_vram_used_bytes: memory.vis_vram_used_bytes,
            gtt_total_bytes: memory.gtt_total_bytes,
            gtt_used_bytes: memory.gtt_used_bytes,
        },
        gpu_metrics: c
            .gpu_metrics
            .map(|g| -> Result<model::GpuMetrics, WireError> {
                Ok(model::GpuMetrics {
                    structure_size: g.structure_size,
                    format_revision: g.format_revision,
                    content_revision: g.content_revision,
                    supported: g.supported,
                    fields: g
                        .fields
                        .iter()
                        .map(|f| {
                            Ok(model::MetricField {
                                name: f.name.clone(),
                                values: metric_values(f)?,
                            })
                        })
                        .collect::<Result<_, WireError>>()?,
                })
            })
            .transpose()?,
        samples: c
            .samples
            .into_iter()
            .map(|s| model::ClockSample {
                offset_ms: s.offset_ms,
                gpu_busy_percent: s.gpu_busy_percent,
                sclk_mhz: s.sclk_mhz,
                sclk_at_lowest_level: s.sclk_at_lowest_level,
                performance_level: s.performance_level,
            })
            .collect(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::snapshot::*;

    /// A snapshot with every field set, including the corner cases of each mapping.
    fn full() -> Snapshot {
        let mut amdgpu = BTreeMap::new();
        amdgpu.insert("cwsr_enable".into(), ParameterValue::Integer(1));
        amdgpu.insert("big".into(), ParameterValue::Unsigned(u64::MAX));
        amdgpu.insert("flag".into(), ParameterValue::Flag(false));
        amdgpu.insert(
            "ppfeaturemask".into(),
            ParameterValue::Hex("0xfff7bfff".into()),
        );
        amdgpu.insert("short_hex".into(), ParameterValue::Hex("0x0".into()));
        amdgpu.insert("lockup_timeout".into(), ParameterValue::Text("".into()));
        let mut ttm = BTreeMap::new();
        ttm.insert("pages_limit".into(), ParameterValue::Integer(25_165_824));
        let mut firmware = BTreeMap::new();
        firmware.insert("mes_fw_version".into(), "0x00000080".into());
        let mut dpm = BTreeMap::new();
        dpm.insert(
            "sclk".into(),
            vec![
                DpmLevel {
                    index: "S".into(),
                    mhz: 19,
                    current: false,
                },
                DpmLevel {
                    index: "0".into(),
                    mhz: 600,
                    current: true,
                },
            ],
        );
        let mut properties = BTreeMap::new();
        properties.insert("gfx_target_version".into(), 110501);
        Snapshot {
            agent_version: "0.1.0".into(),
            taken_at: "2026-01-02T03:04:05.123456789Z".into(),
            host: Host {
                hostname: Some("node-1".into()),
                kernel_release: Some("6.18.2-talos".into()),
                boot_id: Some("b".into()),
                cmdline: Some("quiet a=".into()),
                kernel_arguments: vec![
                    KernelArgument {
                        key: "quiet".into(),
                        value: None,
                    },
                    KernelArgument {
                        key: "a".into(),
                        value: Some(String::new()),
                    },
                ],
                os_release: Some(OsRelease {
                    id: Some("talos".into()),
                    name: Some("Talos".into()),
                    version_id: Some("v1.12.0".into()),
                    pretty_name: Some("Talos (v1.12.0)".into()),
                    talos_version: Some("v1.12.0".into()),
                }),
                mem_total_bytes: Some(1),
                mem_available_bytes: Some(0),
                uptime_usec: Some(7),
            },
            cards: vec![Card {
                name: "card1".into(),
                bdf: Some("0000:c1:00.0".into()),
                pci_id: Some("1002:1586".into()),
                gfx_target: Some("gfx1151".into()),
                render_minor: Some(128),
                vbios_version: Some("113-STRXLGEN-001".into()),
                firmware,
                debugfs_firmware: vec![DebugfsFirmware {
                    name: "SMC".into(),
                    feature_version: "0".into(),
                    firmware_version: "0x00412b00".into(),
                    program: Some(0),
                }],
                dpm_clocks: dpm,
                performance_level: Some("auto".into()),
                gpu_busy_percent: Some(0),
                mem_busy_percent: Some(3),
                hwmon: Some(Hwmon {
                    name: "hwmon3".into(),
                    temp_edge_millicelsius: Some(-5),
                    power_microwatts: Some(9_000_000),
                    power_source: Some("power1_input".into()),
                    sclk_hz: Some(600_000_000),
                    vddgfx_millivolts: Some(700),
                    vddnb_millivolts: None,
                }),
                memory: Memory {
                    vram_total_bytes: Some(1),
                    gtt_total_bytes: Some(103_079_215_104),
                    ..Default::default()
                },
                gpu_metrics: Some(GpuMetrics {
                    structure_size: 264,
                    format_revision: 3,
                    content_revision: 0,
                    supported: true,
                    fields: vec![
                        MetricField {
                            name: "a".into(),
                            values: vec![None, Some(1), None, Some(0)],
                        },
                        MetricField {
                            name: "b".into(),
                            values: vec![Some(5)],
                        },
                    ],
                }),
                samples: vec![ClockSample {
                    offset_ms: 0,
                    gpu_busy_percent: Some(99),
                    sclk_mhz: Some(600),
                    sclk_at_lowest_level: true,
                    performance_level: Some("auto".into()),
                }],
            }],
            module_parameters: ModuleParameters { amdgpu, ttm },
            kfd_nodes: vec![KfdNode {
                node_id: 1,
                gpu_id: 4242,
                name: Some("ip discovery".into()),
                gfx_target: Some("gfx1151".into()),
                properties,
                has_cwsr_size: false,
            }],
            findings: vec![Finding {
                id: "cwsr_hang_risk".into(),
                severity: Severity::Warning,
                title: "t".into(),
                evidence: vec!["e".into()],
                references: vec!["https://github.com/ROCm/ROCm/issues/5590".into()],
                remedy: "r".into(),
                card: Some("card1".into()),
                severity_if_found: None,
            }],
            problems: vec![Problem {
                path: "/sys/x".into(),
                reason: "y".into(),
            }],
            inference_processes: vec![crate::inference::InferenceProcess {
                pid: 7,
                program: "llama-server".into(),
                state: "S".into(),
                ..Default::default()
            }],
            inference_processes_not_listed: 3,
        }
    }

    #[test]
    fn model_survives_the_wire() {
        let model = full();
        let wire = pb::Snapshot::from(model.clone());
        // Through bytes too, as an agent sends it.
        let bytes = prost::Message::encode_to_vec(&wire);
        let decoded: pb::Snapshot = prost::Message::decode(bytes.as_slice()).unwrap();
        let back = Snapshot::try_from(decoded).unwrap();
        assert_eq!(back, model);
        let empty = Snapshot::default();
        assert_eq!(
            Snapshot::try_from(pb::Snapshot::from(empty.clone())).unwrap(),
            empty
        );
    }

    #[test]
    fn bad_wire_values_are_refused() {
        let mut wire = pb::Snapshot::from(full());
        wire.findings[0].severity = 0;
        assert!(Snapshot::try_from(wire).is_err());
        let mut wire = pb::Snapshot::from(full());
        let metrics = wire.cards[0].gpu_metrics.as_mut().unwrap();
        metrics.fields[0].absent_indexes = vec![9];
        assert!(Snapshot::try_from(wire).is_err());
    }
}
