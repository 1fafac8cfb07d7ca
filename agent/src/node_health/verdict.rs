//! Decides the node's `AMDGPUHealthy` condition from its open GPU incidents and its findings: a pure function, so every case is tested without an API server.

use nodectl_model::snapshot::{Finding, Severity};

use crate::kmsg::Classifier;

/// The condition type on the Node.
pub const CONDITION_TYPE: &str = "AMDGPUHealthy";

/// A condition message longer than this is cut (the API takes more; `kubectl describe` does not
/// show it well).
const MAX_MESSAGE_CHARS: usize = 1024;

/// A GPU incident that has not closed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIncident {
    pub incident_id: u64,
    /// `mes_hang_reset`, or the `gpu_<class>` fallback.
    pub kind: String,
    pub device: Option<String>,
    pub first_time: Option<jiff::Timestamp>,
    /// Opened by an injected event (`nodectl-agent inject`).
    pub drill: bool,
}

impl From<&nodectl_model::Incident> for OpenIncident {
    fn from(incident: &nodectl_model::Incident) -> Self {
        OpenIncident {
            incident_id: incident.incident_id,
            kind: incident.kind.to_string(),
            device: incident.device.clone(),
            first_time: incident.first_time,
            drill: incident.drill,
        }
    }
}

/// What a drill's condition message and Event start with.
pub const DRILL_MARK: &str = "[drill: nodectl-agent inject, not a GPU fault] ";

/// What the node's checks said last time they ran.
#[derive(Debug, Clone)]
pub enum Checks {
    Ran(Vec<Finding>),
    /// The snapshot itself failed (why).
    Failed(String),
}

/// The condition's status, as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// The condition to set, and whether new pods should stay off the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    /// CamelCase, as condition reasons are: `MesHangReset`, `MesFirmwareKnownBad`.
    pub reason: String,
    pub message: String,
    /// A critical incident is open or a critical finding holds: `--taint-on-critical` taints.
    pub critical: bool,
}

/// `mes_hang_reset` → `MesHangReset`: a condition reason must start with a letter and hold
/// letters, digits, `_`, `,` and `:` alone.
pub fn reason_of(id: &str) -> String {
    let mut reason = String::with_capacity(id.len());
    for word in id.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            reason.push(first.to_ascii_uppercase());
            reason.extend(chars);
        }
    }
    match reason.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => reason,
        _ => format!("Gpu{reason}"),
    }
}

/// What the rules say of an incident kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentText {
    pub title: String,
    /// The first thing to do.
    pub action: String,
    /// The GPU stopped serving work: `--taint-on-critical` taints.
    pub critical: bool,
}

impl IncidentText {
    /// Title and first action of an incident kind, from the rules; the `gpu_<class>` fallbacks
    /// and a user's rules without them get words that say only what is known.
    pub fn of(classifier: &Classifier, kind: &str) -> Self {
        let named = classifier.kind(kind);
        IncidentText {
            title: named
                .and_then(|k| k.title.clone())
                .unwrap_or_else(|| format!("GPU incident `{kind}`")),
            action: named
                .and_then(|k| k.action.clone())
                .or_else(|| classifier.unnamed_incident_action.clone())
                // Only when a user's knowledge took every action away.
                .unwrap_or_else(|| "see its events with nodectl events".to_owned()),
            // A fallback kind is critical when its first event was a hang: the GPU stopped
            // answering.
            critical: named.map_or(kind == "gpu_hang", |k| k.critical),
        }
    }

    /// What the condition and the incident's Event say of `incident`.
    pub fn sentence(&self, incident: &OpenIncident) -> String {
        format!(
            "{}{} (incident {} on {}{}). Action: {}.",
            if incident.drill { DRILL_MARK } else { "" },
            self.title,
            incident.incident_id,
            incident.device.as_deref().unwrap_or("the GPU"),
            incident
                .first_time
                .map(|t| format!(", since {t}"))
                .unwrap_or_default(),
            self.action
        )
    }
}

/// The condition for these open incidents and checks.
///
/// Order: an open incident or a critical finding makes it False (the most severe one names
/// it); a critical check that could not run, or checks that failed, make it Unknown; else
/// True. Never True when something that could make it False was not read.
///
/// `kernel_log_unread` says why incidents cannot be known (the kernel log is not being read).
pub fn decide(
    classifier: &Classifier,
    open: &[OpenIncident],
    kernel_log_unread: Option<&str>,
    checks: &Checks,
) -> Verdict {
    let incidents: Vec<_> = open
        .iter()
        .map(|incident| (incident, IncidentText::of(classifier, &incident.kind)))
        .collect();
    let critical_incident = incidents.iter().find(|(_, text)| text.critical);
    let findings: &[Finding] = match checks {
        Checks::Ran(findings) => findings,
        Checks::Failed(_) => &[],
    };
    let critical_finding = findings.iter().find(|f| f.severity == Severity::Critical);
    let others = |shown: usize| {
        let more = open.len() + usize::from(critical_finding.is_some()) - shown;
        if more == 0 {
            String::new()
        } else {
            format!(" (+{more} more: nodectl events, nodectl node check)")
        }
    };

    let first_incident = critical_incident.or(incidents.first());
    let verdict = match (first_incident, critical_finding) {
        // A critical incident names the condition before a critical finding: it is what is
        // happening now.
        (Some((incident, text)), finding) if text.critical || finding.is_none() => Verdict {
            status: Status::False,
            reason: reason_of(&incident.kind),
            message: format!("{}{}", text.sentence(incident), others(1)),
            critical: text.critical || finding.is_some(),
        },
        (_, Some(finding)) => Verdict {
            status: Status::False,
            reason: reason_of(&finding.id),
            message: format!(
                "{}{}. Action: {}{}",
                finding.title,
                finding
                    .card
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                finding.remedy.trim_end_matches('.'),
                others(1)
            ),
            critical: true,
        },
        // No incident is open (the first arm takes any when no finding holds).
        _ => match checks {
            _ if kernel_log_unread.is_some() => Verdict {
                status: Status::Unknown,
                reason: "KernelLogUnread".to_owned(),
                message: format!(
                    "GPU incidents cannot be seen: {}",
                    kernel_log_unread.unwrap_or_default()
                ),
                critical: false,
            },
            Checks::Failed(why) => Verdict {
                status: Status::Unknown,
                reason: "NodeChecksFailed".to_owned(),
                message: format!("the node's checks could not run: {why}"),
                critical: false,
            },
            Checks::Ran(findings) => {
                let unread: Vec<&str> = findings
                    .iter()
                    .filter(|f| {
                        f.severity == Severity::Unknown
                            && f.severity_if_found == Some(Severity::Critical)
                    })
                    .map(|f| f.id.as_str())
                    .collect();
                if unread.is_empty() {
                    Verdict {
                        status: Status::True,
                        reason: CONDITION_TYPE.to_owned(),
                        message: "no GPU incident is open and no critical finding holds".to_owned(),
                        critical: false,
                    }
                } else {
                    Verdict {
                        status: Status::Unknown,
                        reason: "CriticalChecksUnknown".to_owned(),
                        message: format!(
                            "critical checks could not run: {} (nodectl node check says why)",
                            unread.join(", ")
                        ),
                        critical: false,
                    }
                }
            }
        },
    };
    Verdict {
        message: cut(verdict.message),
        ..verdict
    }
}

fn cut(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message,
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn classifier() -> Classifier {
        Classifier::embedded().expect("embedded rules")
    }

    fn incident(id: u64, kind: &str) -> OpenIncident {
        OpenIncident {
            incident_id: id,
            kind: kind.to_owned(),
            device: Some("0000:c1:00.0".to_owned()),
            first_time: None,
            drill: false,
        }
    }

    fn finding(id: &str, severity: Severity) -> Finding {
        Finding {
            id: id.to_owned(),
            severity,
            title: format!("{id} title"),
            remedy: format!("do something about {id}."),
            ..Finding::default()
        }
    }

    #[test]
    fn reasons_are_camel_case_and_start_with_a_letter() {
        assert_eq!(reason_of("mes_hang_reset"), "MesHangReset");
        assert_eq!(reason_of("gpu_hang"), "GpuHang");
        assert_eq!(reason_of("9lives"), "Gpu9lives");
        assert_eq!(reason_of(""), "Gpu");
    }

    #[test]
    fn nothing_open_and_checks_clean_is_healthy() {
        let v = decide(
            &classifier(),
            &[],
            None,
            &Checks::Ran(vec![finding("x", Severity::Warning)]),
        );
        assert_eq!(v.status, Status::True);
        assert!(!v.critical);
    }

    #[test]
    fn an_open_incident_names_the_condition_with_its_action() {
        let v = decide(
            &classifier(),
            &[incident(7, "mes_hang_reset")],
            None,
            &Checks::Ran(Vec::new()),
        );
        assert_eq!(v.status, Status::False);
        assert_eq!(v.reason, "MesHangReset");
        assert!(v.message.contains("nodectl cwsr disable"), "{}", v.message);
        assert!(
            v.message.contains("incident 7 on 0000:c1:00.0"),
            "{}",
            v.message
        );
        assert!(v.critical);
    }

    #[test]
    fn a_critical_incident_comes_before_a_warning_one_and_the_rest_are_counted() {
        let v = decide(
            &classifier(),
            &[incident(3, "page_fault"), incident(9, "smu_hang")],
            None,
            &Checks::Ran(Vec::new()),
        );
        assert_eq!(v.reason, "SmuHang");
        assert!(v.message.contains("+1 more"), "{}", v.message);
    }

    #[test]
    fn a_warning_incident_is_false_but_not_critical_and_a_critical_finding_then_names_it() {
        let only_incident = decide(
            &classifier(),
            &[incident(3, "page_fault")],
            None,
            &Checks::Ran(Vec::new()),
        );
        assert_eq!(only_incident.status, Status::False);
        assert!(!only_incident.critical);
        let with_finding = decide(
            &classifier(),
            &[incident(3, "page_fault")],
            None,
            &Checks::Ran(vec![finding("mes_firmware_known_bad", Severity::Critical)]),
        );
        assert_eq!(with_finding.reason, "MesFirmwareKnownBad");
        assert!(with_finding.critical);
        assert!(
            with_finding.message.contains("+1 more"),
            "{}",
            with_finding.message
        );
    }

    #[test]
    fn what_could_not_be_read_is_unknown_never_healthy() {
        let mut unread = finding("mes_firmware_known_bad", Severity::Unknown);
        unread.severity_if_found = Some(Severity::Critical);
        let v = decide(&classifier(), &[], None, &Checks::Ran(vec![unread]));
        assert_eq!(v.status, Status::Unknown);
        assert!(v.message.contains("mes_firmware_known_bad"));
        let failed = decide(&classifier(), &[], None, &Checks::Failed("busy".to_owned()));
        assert_eq!(failed.status, Status::Unknown);
        // An open incident still says False when the checks failed.
        let both = decide(
            &classifier(),
            &[incident(1, "gpu_hang")],
            None,
            &Checks::Failed("busy".to_owned()),
        );
        assert_eq!(both.status, Status::False);
        assert!(both.critical, "a hang fallback is critical");
        let unread = decide(
            &classifier(),
            &[],
            Some("no permission"),
            &Checks::Ran(Vec::new()),
        );
        assert_eq!(unread.status, Status::Unknown);
        assert_eq!(unread.reason, "KernelLogUnread");
    }

    #[test]
    fn a_drill_says_so() {
        let mut drill = incident(1 << 62, "mes_hang");
        drill.drill = true;
        let v = decide(&classifier(), &[drill], None, &Checks::Ran(Vec::new()));
        assert_eq!(v.status, Status::False);
        assert!(v.message.starts_with(DRILL_MARK), "{}", v.message);
    }

    #[test]
    fn long_messages_are_cut() {
        let mut f = finding("x", Severity::Critical);
        f.remedy = "a".repeat(5000);
        let v = decide(&classifier(), &[], None, &Checks::Ran(vec![f]));
        assert!(v.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
