//! Checks: the `[[check]]` rows of the knowledge catalog (data) evaluated over a snapshot (logic, by id) into findings.

use nodectl_model::knowledge::{Kind, Knowledge};

use crate::collect::kfd;
use nodectl_model::snapshot::{Card, Finding, ParameterValue, Problem, Severity, Snapshot};

/// One `[[check]]` row, with its remedy: the text of its actions.
#[derive(Debug, Clone)]
pub struct KnownIssue {
    pub id: String,
    pub severity: Severity,
    pub title: String,
    pub references: Vec<String>,
    pub remedy: String,
    pub params: toml::Table,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckKeys {
    #[serde(default)]
    params: toml::Table,
}

/// The checks of a knowledge catalog; an error names the row.
pub fn known_issues_of(knowledge: &Knowledge) -> Result<Vec<KnownIssue>, String> {
    let mut issues = Vec::new();
    for entry in knowledge.of_kind(Kind::Check) {
        let keys: CheckKeys = entry.body().map_err(|e| e.to_string())?;
        issues.push(KnownIssue {
            id: entry.id.clone(),
            severity: entry.severity.unwrap_or(Severity::Info),
            title: entry.title.clone(),
            references: entry.references.clone(),
            remedy: knowledge.action_text(&entry.actions),
            params: keys.params,
        });
    }
    Ok(issues)
}

/// The checks of the knowledge in effect, made once: every snapshot runs them, and the knowledge
/// is installed at start-up, before the first snapshot.
pub fn known_issues() -> Result<&'static [KnownIssue], &'static str> {
    static MADE: std::sync::LazyLock<Result<Vec<KnownIssue>, String>> =
        std::sync::LazyLock::new(|| {
            let knowledge = Knowledge::current().map_err(|e| e.to_string())?;
            known_issues_of(&knowledge)
        });
    match &*MADE {
        Ok(issues) => Ok(issues),
        Err(e) => Err(e),
    }
}

/// The check ids this agent has logic for: a `[[check]]` row of another id cannot run.
pub fn check_ids() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|(id, _)| *id)
}

/// What made a rule fire, for one card or for the node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hit {
    card: Option<String>,
    evidence: Vec<String>,
    /// The rule could not be evaluated: an input exists but could not be read (the evidence
    /// says which and why). Never a finding that assumes the value is absent.
    unknown: bool,
}

impl Hit {
    fn found(card: Option<String>, evidence: Vec<String>) -> Self {
        Self {
            card,
            evidence,
            unknown: false,
        }
    }

    fn unknown(card: Option<String>, problem: &Problem) -> Self {
        Self {
            card,
            evidence: vec![format!(
                "could not be read: {} ({})",
                problem.path, problem.reason
            )],
            unknown: true,
        }
    }
}

/// The problem recorded for a host path, when reading it failed.
fn problem_at<'a>(s: &'a Snapshot, path: &str) -> Option<&'a Problem> {
    s.problems.iter().find(|p| p.path == path)
}

type Rule = fn(&KnownIssue, &Snapshot) -> Vec<Hit>;

/// The logic of each id of the table.
const RULES: &[(&str, Rule)] = &[
    ("mes_firmware_known_bad", mes_firmware_known_bad),
    ("cwsr_hang_risk", cwsr_hang_risk),
    ("gtt_size_conflict", gtt_size_conflict),
    ("unknown_module_parameter", unknown_module_parameter),
    ("gpu_clock_stuck_low", gpu_clock_stuck_low),
    ("amd_iommu_off", amd_iommu_off),
    ("cwsr_off_with_sizing_fix", cwsr_off_with_sizing_fix),
    ("kernel_before_6_18_4", kernel_before_6_18_4),
    ("misspelt_module_argument", misspelt_module_argument),
];

/// Runs every known issue's rule; a table row without a rule is a problem, not a silent skip.
pub fn evaluate(snapshot: &Snapshot) -> (Vec<Finding>, Vec<Problem>) {
    let issues = match known_issues() {
        Ok(issues) => issues,
        Err(e) => {
            return (
                Vec::new(),
                vec![Problem {
                    path: "(knowledge checks)".to_owned(),
                    reason: e.to_owned(),
                }],
            );
        }
    };
    let mut findings = Vec::new();
    let mut problems = Vec::new();
    for issue in issues {
        let Some((_, rule)) = RULES.iter().find(|(id, _)| *id == issue.id) else {
            problems.push(Problem {
                path: "(knowledge checks)".to_owned(),
                reason: format!("known issue {} has no rule", issue.id),
            });
            continue;
        };
        for hit in rule(issue, snapshot) {
            let finding = if hit.unknown {
                Finding {
                    id: issue.id.clone(),
                    severity: Severity::Unknown,
                    title: format!("could not be checked: {}", issue.title),
                    evidence: hit.evidence,
                    references: issue.references.clone(),
                    remedy: format!(
                        "Make the file named in the evidence readable and run `nodectl node check` again; until then this may be present ({} if it fires). What to do if it is: {}",
                        issue.severity.as_str(),
                        issue.remedy
                    ),
                    card: hit.card,
                    severity_if_found: Some(issue.severity),
                }
            } else {
                Finding {
                    id: issue.id.clone(),
                    severity: issue.severity,
                    title: issue.title.clone(),
                    evidence: hit.evidence,
                    references: issue.references.clone(),
                    remedy: issue.remedy.clone(),
                    card: hit.card,
                    severity_if_found: None,
                }
            };
            findings.push(finding);
        }
    }
    // Worst first, then by id and card: a stable order for people and golden files.
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.id.cmp(&b.id))
            .then_with(|| a.card.cmp(&b.card))
    });
    (findings, problems)
}

fn int_list(issue: &KnownIssue, key: &str) -> Vec<i64> {
    issue
        .params
        .get(key)
        .and_then(toml::Value::as_array)
        .map(|values| values.iter().filter_map(toml::Value::as_integer).collect())
        .unwrap_or_default()
}

fn str_list(issue: &KnownIssue, key: &str) -> Vec<String> {
    issue
        .params
        .get(key)
        .and_then(toml::Value::as_array)
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn int_param(issue: &KnownIssue, key: &str, default: i64) -> i64 {
    issue
        .params
        .get(key)
        .and_then(toml::Value::as_integer)
        .unwrap_or(default)
}

fn param_evidence(module: &str, name: &str, value: &ParameterValue) -> String {
    format!(
        "{module}.{name}: {} (/sys/module/{module}/parameters/{name})",
        value.raw()
    )
}

fn mes_firmware_known_bad(issue: &KnownIssue, s: &Snapshot) -> Vec<Hit> {
    let bad = int_list(issue, "bad_versions");
    s.cards
        .iter()
        .filter_map(|card| {
            let sysfs = format!(
                "/sys/class/drm/{}/device/fw_version/mes_fw_version",
                card.name
            );
            let debugfs = format!(
                "/sys/kernel/debug/dri/{}/amdgpu_firmware_info",
                card_number(&card.name)
            );
            let Some(printed) = card.mes_firmware() else {
                // Unreadable rather than absent: the version may well be a bad one.
                return problem_at(s, &sysfs)
                    .or_else(|| problem_at(s, &debugfs))
                    .map(|p| Hit::unknown(Some(card.name.clone()), p));
            };
            let source = if card.firmware.contains_key("mes_fw_version") {
                sysfs
            } else {
                debugfs
            };
            let Some(value) = printed
                .strip_prefix("0x")
                .and_then(|hex| i64::from_str_radix(hex, 16).ok())
            else {
                return Some(Hit::unknown(
                    Some(card.name.clone()),
                    &Problem {
                        path: source,
                        reason: format!("MES version {printed:?} is not 0x-prefixed hexadecimal"),
                    },
                ));
            };
            if !bad.contains(&value) {
                return None;
            }
            let mut evidence = vec![format!("mes_fw_version: {printed} ({source})")];
            if let Some(kiq) = card.firmware.get("mes_kiq_fw_version") {
                evidence.push(format!("mes_kiq_fw_version: {kiq}"));
            }
            Some(Hit::found(Some(card.name.clone()), evidence))
        })
        .collect()
}

fn card_number(name: &str) -> &str {
    name.strip_prefix("card").unwrap_or(name)
}

fn cwsr_hang_risk(issue: &KnownIssue, s: &Snapshot) -> Vec<Hit> {
    let cards = cards_of(issue, s);
    let Some(cwsr) = s.module_parameters.amdgpu.get("cwsr_enable") else {
        // Unreadable rather than absent: CWSR may be on.
        return problem_at(s, "/sys/module/amdgpu/parameters/cwsr_enable")
            .map(|p| {
                cards
                    .iter()
                    .map(|c| Hit::unknown(Some(c.name.clone()), p))
                    .collect()
            })
            .unwrap_or_default();
    };
    if cwsr.as_i64() != Some(1) {
        return Vec::new();
    }
    cards
        .into_iter()
        .filter_map(|card| {
            let target = card.gfx_target.as_deref()?;
            let node = kfd::node_for_card(card.bdf.as_deref(), card.render_minor, &s.kfd_nodes)?;
            if node.has_cwsr_size {
                return None;
            }
            let mut evidence = vec![
                param_evidence("amdgpu", "cwsr_enable", cwsr),
                format!("gfx_target: {target} (KFD node {})", node.node_id),
                format!(
                    "cwsr_size: absent (/sys/class/kfd/kfd/topology/nodes/{}/properties)",
                    node.node_id
                ),
            ];
            if let Some(mes) = card.mes_firmware() {
                evidence.push(format!("mes_fw_version: {mes}"));
            }
            if let Some(kernel) = &s.host.kernel_release {
                evidence.push(format!("kernel: {kernel} (/proc/sys/kernel/osrelease)"));
            }
            Some(Hit::found(Some(card.name.clone()), evidence))
        })
        .collect()
}

fn gtt_size_conflict(_issue: &KnownIssue, s: &Snapshot) -> Vec<Hit> {
    let Some(gttsize) = s.module_parameters.amdgpu.get("gttsize") else {
        return Vec::new();
    };
    if gttsize.as_i64() == Some(-1) {
        return Vec::new();
    }
    let on_cmdline = s.host.kernel_argument("ttm.pages_limit");
    let in_sysfs = s
        .module_parameters
        .ttm
        .get("pages_limit")
        .filter(|v| !matches!(v, ParameterValue::Integer(0)));
    let mut evidence = vec![param_evidence("amdgpu", "gttsize", gttsize)];
    if let Some(arg) = on_cmdline {
        evidence.push(format!(
            "ttm.pages_limit={} (/proc/cmdline)",
            arg.value.as_deref().unwrap_or("")
        ));
    }
    if let Some(limit) = in_sysfs {
        evidence.push(param_evidence("ttm", "pages_limit", limit));
    }
    if on_cmdline.is_none() && in_sysfs.is_none() {
        return Vec::new();
    }
    vec![Hit::found(None, evidence)]
}

fn unknown_module_parameter(_issue: &KnownIssue, s: &Snapshot) -> Vec<Hit> {
    let known = &s.module_parameters.amdgpu;
    // Without the parameter list (amdgpu not loaded, or the directory unreadable) nothing can
    // be judged.
    if known.is_empty() || problem_at(s, "/sys/module/amdgpu/parameters").is_some() {
        return Vec::new();
    }
    s.host
        .kernel_arguments
        .iter()
        .filter_map(|arg| {
            let name = arg.key.strip_prefix("amdgpu.")?;
            // The kernel treats `-` and `_` in parameter names alike.
            let canonical = name.replace('-', "_");
            if known.contains_key(&canonical) {
                return None;
            }
            // Listed but unreadable is not unknown to the module: it must not be removed.
            let file = format!("/sys/module/amdgpu/parameters/{canonical}");
            if let Some(problem) = problem_at(s, &file) {
                return Some(Hit::unknown(None, problem));
            }
            let shown = match &arg.value {
                Some(v) => format!("{}={v}", arg.key),
                None => arg.key.clone(),
            };
            let mut evidence = vec![
                format!("{shown} (/proc/cmdline)"),
                format!("{canonical}: not in /sys/module/amdgpu/parameters"),
            ];
            if let Some(meant) = nearest(&canonical, known.keys().map(String::as_str), 2) {
                evidence.push(format!("did you mean amdgpu.{meant}?"));
            }
            Some(Hit::found(None, evidence))
        })
        .collect()
}

/// The candidate closest to `word` within `max_edits` (Levenshtein), when one alone is closest.
fn nearest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
    max_edits: usize,
) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    let mut tie = false;
    for candidate in candidates {
        let distance = strsim::levenshtein(word, candidate);
        if distance == 0 || distance > max_edits {
            continue;
        }
        match best {
            Some((d, _)) if distance > d => {}
            Some((d, _)) if distance == d => tie = true,
            _ => {
                best = Some((distance, candidate));
                tie = false;
            }
        }
    }
    best.filter(|_| !tie).map(|(_, c)| c)
}

/// The cards of the row's `gfx_targets`.
fn cards_of<'a>(issue: &KnownIssue, s: &'a Snapshot) -> Vec<&'a Card> {
    let targets = str_list(issue, "gfx_targets");
    s.cards
        .iter()
        .filter(|c| {
            c.gfx_target
                .as_deref()
                .is_some_and(|t| targets.iter().any(|x| x == t))
        })
        .collect()
}

fn cwsr_off_with_sizing_fix(issue: &KnownIssue, s: &Snapshot) -> Vec<Hit> {
    let Some(cwsr) = s.module_parameters.amdgpu.get("cwsr_enable") else {
        return Vec::new();
    };
    if cwsr.as_i64() != Some(0) {
        return Vec::new();
    }
    cards_of(issue, s)
        .into_iter()
        .filter_map(|card| {
            let node = kfd::node_for_card(card.bdf.as_deref(), card.render_minor, &s.kfd_nodes)?;
            if !node.has_cwsr_size {
                return None;
            }
            let mut evidence = vec![
                param_evidence("amdgpu", "cwsr_enable", cwsr),
                format!(
                    "cwsr_size: present (/sys/class/kfd/kfd/topology/nodes/{}/properties)",
                    node.node_id
                ),
            ];
            if let Some(kernel) = &s.host.kernel_release {
                evidence.push(format!("kernel: {kernel} (/proc/sys/kernel/osrelease)"));
            }
            Some(Hit::found(Some(card.name.clone()), evidence))
        })
        .collect()
}

/// `6.18.4-talos` is `[6, 18, 4]`: the leading dotted numbers of a kernel release.
fn kernel_version(release: &str) -> Option<Vec<u64>> {
    let numeric = release
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()?;
    let parts: Vec<u64> = numeric.split('.').map_while(|p| p.parse().ok()).collect();
    (parts.len() >= 2).then_some(parts)
}

fn kernel_before_6_18_4(issue: &KnownIssue, s: &Snapshot) -> Vec<Hit> {
    const OSRELEASE: &str = "/proc/sys/kernel/osrelease";
    let cards = cards_of(issue, s);
    if cards.is_empty() {
        return Vec::new();
    }
    let Some(release) = &s.host.kernel_release else {
        return problem_at(s, OSRELEASE)
            .map(|p| vec![Hit::unknown(None, p)])
            .unwrap_or_default();
    };
    let minimum = issue
        .params
        .get("min_kernel")
        .and_then(toml::Value::as_str)
        .and_then(kernel_version)
        .unwrap_or_default();
    let Some(version) = kernel_version(release) else {
        return vec![Hit::unknown(
            None,
            &Problem {
                path: OSRELEASE.to_owned(),
                reason: format!("{release:?} does not start with a kernel version"),
            },
        )];
    };
    if version >= minimum {
        return Vec::new();
    }
    cards
        .into_iter()
        .map(|card| {
            Hit::found(
                Some(card.name.clone()),
                vec![
                    format!("kernel: {release} ({OSRELEASE})"),
                    format!(
                        "gfx_target: {}",
                        card.gfx_target.as_deref().unwrap_or_default()
                    ),
                ],
            )
        })
        .collect()
}

fn misspelt_module_argument(issue: &KnownIssue, s: &Snapshot) -> Vec<Hit> {
    let modules = str_list(issue, "modules");
    let max_edits = usize::try_from(int_param(issue, "max_edits", 2)).unwrap_or(2);
    let known = &s.module_parameters.amdgpu;
    s.host
        .kernel_arguments
        .iter()
        .filter_map(|arg| {
            let (module, parameter) = arg.key.split_once('.')?;
            let meant = nearest(module, modules.iter().map(String::as_str), max_edits)?;
            // A near miss names a parameter the module has (any, when amdgpu is not loaded
            // and its list is unknown); `amdgpu_foo.x` of another driver is not one.
            let parameter = parameter.replace('-', "_");
            if meant == "amdgpu" && !known.is_empty() && !known.contains_key(&parameter) {
                return None;
            }
            let (shown, intended) = match &arg.value {
                Some(v) => (
                    format!("{}={v}", arg.key),
                    format!("{meant}.{parameter}={v}"),
                ),
                None => (arg.key.clone(), format!("{meant}.{parameter}")),
            };
            Some(Hit::found(
                None,
                vec![
                    format!("{shown} (/proc/cmdline)"),
                    format!("no module {module}: did you mean {intended}?"),
                ],
            ))
        })
        .collect()
}

fn gpu_clock_stuck_low(issue: &KnownIssue, s: &Snapshot) -> Vec<Hit> {
    let busy_min = int_param(issue, "busy_percent_min", 80);
    let min_samples = usize::try_from(int_param(issue, "min_samples", 2)).unwrap_or(2);
    s.cards
        .iter()
        .filter_map(|card| {
            let samples = &card.samples;
            if samples.len() < min_samples.max(2) {
                return None;
            }
            let stuck = samples.iter().all(|sample| {
                sample
                    .gpu_busy_percent
                    .is_some_and(|b| i64::from(b) >= busy_min)
                    && sample.sclk_at_lowest_level
                    && sample.performance_level.as_deref() == Some("auto")
            });
            if !stuck {
                return None;
            }
            let busy: Vec<String> = samples
                .iter()
                .filter_map(|x| x.gpu_busy_percent.map(|b| format!("{b}%")))
                .collect();
            let sclk: Vec<String> = samples
                .iter()
                .filter_map(|x| x.sclk_mhz.map(|m| format!("{m}")))
                .collect();
            let span = samples.last().map(|x| x.offset_ms).unwrap_or(0);
            Some(Hit::found(
                Some(card.name.clone()),
                vec![
                    format!(
                        "gpu_busy_percent: {} over {} samples in {span} ms (/sys/class/drm/{}/device/gpu_busy_percent)",
                        busy.join(", "),
                        samples.len(),
                        card.name
                    ),
                    format!(
                        "sclk MHz: {} at the lowest level (/sys/class/drm/{}/device/pp_dpm_sclk)",
                        sclk.join(", "),
                        card.name
                    ),
                    format!(
                        "power_dpm_force_performance_level: auto (/sys/class/drm/{}/device/power_dpm_force_performance_level)",
                        card.name
                    ),
                ],
            ))
        })
        .collect()
}

fn amd_iommu_off(_issue: &KnownIssue, s: &Snapshot) -> Vec<Hit> {
    match s.host.kernel_argument("amd_iommu") {
        Some(arg) if arg.value.as_deref() == Some("off") => vec![Hit::found(
            None,
            vec!["amd_iommu=off (/proc/cmdline)".to_owned()],
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use nodectl_model::KernelArgument;
    use nodectl_model::snapshot::{Card, ClockSample, KfdNode};

    fn ids(s: &Snapshot) -> Vec<String> {
        evaluate(s).0.into_iter().map(|f| f.id).collect()
    }

    fn arg(key: &str, value: &str) -> KernelArgument {
        KernelArgument {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    fn strix_halo() -> Snapshot {
        let mut s = Snapshot::default();
        let mut card = Card {
            name: "card1".into(),
            bdf: Some("0000:c1:00.0".into()),
            gfx_target: Some("gfx1151".into()),
            render_minor: Some(128),
            ..Default::default()
        };
        card.firmware
            .insert("mes_fw_version".into(), "0x00000080".into());
        s.cards.push(card);
        let mut node = KfdNode {
            node_id: 1,
            gpu_id: 1234,
            gfx_target: Some("gfx1151".into()),
            ..Default::default()
        };
        node.properties.insert("location_id".into(), 49408);
        node.properties.insert("gfx_target_version".into(), 110501);
        s.kfd_nodes.push(node);
        s.module_parameters
            .amdgpu
            .insert("cwsr_enable".into(), ParameterValue::Integer(0));
        s.module_parameters
            .amdgpu
            .insert("gttsize".into(), ParameterValue::Integer(-1));
        s
    }

    #[test]
    fn every_row_has_a_rule_and_every_rule_a_row() {
        let issues = known_issues().unwrap();
        let table: Vec<&str> = issues.iter().map(|i| i.id.as_str()).collect();
        let rules: Vec<&str> = RULES.iter().map(|(id, _)| *id).collect();
        assert_eq!(table, rules);
        for issue in issues {
            assert!(
                !issue.title.is_empty() && !issue.remedy.is_empty(),
                "{}",
                issue.id
            );
            assert!(
                issue
                    .references
                    .iter()
                    .all(|r| r.starts_with("https://github.com/")),
                "{}",
                issue.id
            );
        }
        assert!(evaluate(&strix_halo()).1.is_empty());
    }

    #[test]
    fn healthy_node_has_no_findings() {
        assert!(ids(&strix_halo()).is_empty());
    }

    #[test]
    fn mes_0x83_is_critical() {
        let mut s = strix_halo();
        s.cards[0]
            .firmware
            .insert("mes_fw_version".into(), "0x00000083".into());
        let (findings, _) = evaluate(&s);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].id, "mes_firmware_known_bad");
        assert_eq!(findings[0].severity, Severity::Critical);
        assert_eq!(findings[0].card.as_deref(), Some("card1"));
        assert!(findings[0].evidence[0].contains("0x00000083"));
    }

    #[test]
    fn cwsr_on_without_cwsr_size_is_a_risk() {
        let mut s = strix_halo();
        s.module_parameters
            .amdgpu
            .insert("cwsr_enable".into(), ParameterValue::Integer(1));
        assert_eq!(ids(&s), ["cwsr_hang_risk"]);
        s.kfd_nodes[0].has_cwsr_size = true;
        assert!(ids(&s).is_empty());
        s.kfd_nodes[0].has_cwsr_size = false;
        s.cards[0].gfx_target = Some("gfx1100".into());
        assert!(ids(&s).is_empty());
    }

    #[test]
    fn cwsr_off_on_a_kernel_with_the_sizing_fix_is_info() {
        let mut s = strix_halo();
        assert!(ids(&s).is_empty(), "no cwsr_size: off is the advice");
        s.kfd_nodes[0].has_cwsr_size = true;
        let (findings, _) = evaluate(&s);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].id, "cwsr_off_with_sizing_fix");
        assert_eq!(findings[0].severity, Severity::Info);
        assert!(findings[0].evidence[1].starts_with("cwsr_size: present"));
        s.module_parameters
            .amdgpu
            .insert("cwsr_enable".into(), ParameterValue::Integer(1));
        assert!(ids(&s).is_empty(), "on with the fix: nothing to say");
    }

    #[test]
    fn kernels_before_6_18_4_on_gfx1151_are_a_warning() {
        let mut s = strix_halo();
        for (release, fires) in [
            ("6.17.9-talos", true),
            ("6.18.2-talos", true),
            ("6.18.4-talos", false),
            ("6.18.6-200.fc43.x86_64", false),
            ("6.19", false),
            ("7.0.1", false),
            ("6.18", true),
        ] {
            s.host.kernel_release = Some(release.into());
            assert_eq!(
                ids(&s) == ["kernel_before_6_18_4"],
                fires,
                "{release}: {:?}",
                ids(&s)
            );
        }
        // Another GPU: not this row's business.
        s.host.kernel_release = Some("6.14.11".into());
        s.cards[0].gfx_target = Some("gfx1100".into());
        assert!(ids(&s).is_empty());
        // An unreadable or unparsable release is unknown, never fine.
        s.cards[0].gfx_target = Some("gfx1151".into());
        s.host.kernel_release = Some("talos".into());
        let (findings, _) = evaluate(&s);
        assert_eq!(findings[0].severity, Severity::Unknown);
        s.host.kernel_release = None;
        s.problems.push(problem("/proc/sys/kernel/osrelease"));
        let (findings, _) = evaluate(&s);
        assert_eq!(findings[0].severity, Severity::Unknown);
        assert_eq!(findings[0].severity_if_found, Some(Severity::Warning));
    }

    #[test]
    fn a_misspelt_module_or_parameter_names_the_intended_argument() {
        let mut s = strix_halo();
        s.module_parameters
            .amdgpu
            .insert("gpu_recovery".into(), ParameterValue::Integer(-1));
        s.host
            .kernel_arguments
            .push(arg("aamdgpu.cwsr_enable", "0"));
        s.host
            .kernel_arguments
            .push(arg("amdgpu.cwsr_enabled", "0"));
        // Another driver's argument, and amdgpu's own, are left alone.
        s.host.kernel_arguments.push(arg("amdxcp.foo", "1"));
        s.host.kernel_arguments.push(arg("radeon.cik_support", "0"));
        s.host.kernel_arguments.push(arg("amdgpu.cwsr_enable", "0"));
        let (findings, _) = evaluate(&s);
        let by_id = |id: &str| {
            findings
                .iter()
                .filter(|f| f.id == id)
                .map(|f| f.evidence.join(" | "))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            by_id("misspelt_module_argument"),
            [
                "aamdgpu.cwsr_enable=0 (/proc/cmdline) | no module aamdgpu: did you mean amdgpu.cwsr_enable=0?"
            ]
        );
        assert_eq!(
            by_id("unknown_module_parameter"),
            [
                "amdgpu.cwsr_enabled=0 (/proc/cmdline) | cwsr_enabled: not in /sys/module/amdgpu/parameters | did you mean amdgpu.cwsr_enable?"
            ]
        );
        // A module name close to amdgpu with a parameter amdgpu lacks is not a near miss.
        s.host.kernel_arguments.clear();
        s.host
            .kernel_arguments
            .push(arg("amdgpv.no_such_thing", "1"));
        assert!(ids(&s).is_empty(), "{:?}", ids(&s));
    }

    #[test]
    fn gttsize_with_pages_limit_conflicts() {
        let mut s = strix_halo();
        s.module_parameters
            .amdgpu
            .insert("gttsize".into(), ParameterValue::Integer(131072));
        assert!(ids(&s).is_empty(), "no pages_limit anywhere");
        s.host
            .kernel_arguments
            .push(arg("ttm.pages_limit", "25165824"));
        assert_eq!(ids(&s), ["gtt_size_conflict"]);
    }

    #[test]
    fn unknown_amdgpu_argument() {
        let mut s = strix_halo();
        s.host
            .kernel_arguments
            .push(arg("amdgpu.gtt_size", "131072"));
        s.host.kernel_arguments.push(arg("amdgpu.cwsr-enable", "0"));
        let (findings, _) = evaluate(&s);
        assert_eq!(findings.len(), 1);
        assert!(findings[0].evidence[0].starts_with("amdgpu.gtt_size=131072"));
        s.module_parameters.amdgpu.clear();
        assert!(ids(&s).is_empty(), "no parameter list, no judgement");
    }

    #[test]
    fn clock_stuck_low_needs_every_sample() {
        let sample = |busy, lowest| ClockSample {
            gpu_busy_percent: Some(busy),
            sclk_mhz: Some(600),
            sclk_at_lowest_level: lowest,
            performance_level: Some("auto".into()),
            ..Default::default()
        };
        let mut s = strix_halo();
        s.cards[0].samples = vec![sample(95, true)];
        assert!(ids(&s).is_empty(), "one sample is not a trend");
        s.cards[0].samples = vec![sample(95, true), sample(90, true), sample(80, true)];
        assert_eq!(ids(&s), ["gpu_clock_stuck_low"]);
        s.cards[0].samples[1] = sample(79, true);
        assert!(ids(&s).is_empty());
        s.cards[0].samples[1] = sample(95, false);
        assert!(ids(&s).is_empty());
        s.cards[0].samples[1] = sample(95, true);
        s.cards[0].samples[2].performance_level = Some("manual".into());
        assert!(ids(&s).is_empty());
    }

    #[test]
    fn iommu_off_is_info() {
        let mut s = strix_halo();
        s.host.kernel_arguments.push(arg("amd_iommu", "off"));
        let (findings, _) = evaluate(&s);
        assert_eq!(findings[0].id, "amd_iommu_off");
        assert_eq!(findings[0].severity, Severity::Info);
        s.host.kernel_arguments[0] = arg("amd_iommu", "on");
        assert!(ids(&s).is_empty());
    }

    fn problem(path: &str) -> Problem {
        Problem {
            path: path.into(),
            reason: "cannot read: Permission denied".into(),
        }
    }

    #[test]
    fn unreadable_inputs_are_unknown_not_absent() {
        // cwsr_enable unreadable: not an unknown parameter, and CWSR may be on.
        let mut s = strix_halo();
        s.module_parameters.amdgpu.remove("cwsr_enable");
        s.host.kernel_arguments.push(arg("amdgpu.cwsr_enable", "0"));
        s.problems
            .push(problem("/sys/module/amdgpu/parameters/cwsr_enable"));
        let (findings, _) = evaluate(&s);
        let unknown: Vec<(&str, Severity)> = findings
            .iter()
            .map(|f| (f.id.as_str(), f.severity))
            .collect();
        assert!(unknown.contains(&("unknown_module_parameter", Severity::Unknown)));
        assert!(unknown.contains(&("cwsr_hang_risk", Severity::Unknown)));
        assert!(!unknown.contains(&("unknown_module_parameter", Severity::Warning)));

        // MES version unreadable or unparsable: unknown, ranked above warnings.
        let mut s = strix_halo();
        s.cards[0].firmware.remove("mes_fw_version");
        s.problems.push(problem(
            "/sys/class/drm/card1/device/fw_version/mes_fw_version",
        ));
        let (findings, _) = evaluate(&s);
        assert_eq!(findings[0].id, "mes_firmware_known_bad");
        assert_eq!(findings[0].severity, Severity::Unknown);
        assert!(findings[0].evidence[0].contains("Permission denied"));
        let mut s = strix_halo();
        s.cards[0]
            .firmware
            .insert("mes_fw_version".into(), "0xZZ".into());
        let (findings, _) = evaluate(&s);
        assert_eq!(findings[0].severity, Severity::Unknown, "{findings:?}");
        // A file that is simply absent is still "not supported here", not unknown.
        let mut s = strix_halo();
        s.cards[0].firmware.remove("mes_fw_version");
        assert!(ids(&s).is_empty());
    }
}
