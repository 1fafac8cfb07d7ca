//! Classifies amdgpu/KFD kernel messages with rules kept as data (embedded TOML, or a user file of the same format).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use nodectl_model::knowledge::{Kind, Knowledge, KnowledgeError, KnowledgeErrors, Location};
use nodectl_model::snapshot::Severity;

pub use nodectl_model::Class;
use nodectl_model::kfd_smi::{SmiEventKind, SmiRecord};
use regex::{Regex, RegexSet};

/// How an event takes part in incidents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentRole {
    /// Starts an incident, or joins the open one.
    Open,
    /// Joins an open incident; alone it starts none.
    Join,
    /// Stands alone.
    None,
}

/// The GPU recovered, or failed to, when the line appeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    Succeeded,
    Failed,
}

/// A rule's own keys (the header is the knowledge row's): a kernel message rule has a
/// `pattern`, a KFD SMI event rule an `smi_event` (and may ask for a `reset_cause`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleKeys {
    class: Class,
    pattern: Option<String>,
    smi_event: Option<SmiEventKind>,
    reset_cause: Option<String>,
    incident: Option<IncidentRole>,
    recovery: Option<Recovery>,
    example: Option<String>,
}

/// An incident kind's own keys.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KindKeys {
    #[serde(default)]
    require: Vec<Vec<String>>,
    #[serde(default)]
    min_counts: BTreeMap<String, u32>,
}

/// Rules that cannot be used; each message names the file and line of the row.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{0}")]
    Knowledge(#[from] KnowledgeErrors),
    #[error("{0}")]
    Row(#[from] KnowledgeError),
    #[error("{at}: rule `{id}`: bad pattern: {reason}")]
    Pattern {
        at: Location,
        id: String,
        reason: String,
    },
    #[error(
        "{at}: rule `{id}`: its example `{example}` is classified {got} by the rules in effect"
    )]
    Example {
        at: Location,
        id: String,
        example: String,
        got: String,
    },
    #[error("the rule set does not compile: {0}")]
    Set(String),
    #[error("{at}: rule `{id}`: {reason}")]
    Shape {
        at: Location,
        id: String,
        reason: String,
    },
}

/// How an event takes part in incidents, whatever its source: what the tracker needs of a rule.
#[derive(Debug, Clone, Copy)]
pub struct EventRole<'a> {
    pub id: &'a Arc<str>,
    pub class: Class,
    pub incident: IncidentRole,
    pub recovery: Option<Recovery>,
}

/// A rule over KFD SMI records: the event kind, and the reset cause it asks for.
#[derive(Debug)]
pub struct SmiRule {
    pub id: Arc<str>,
    pub class: Class,
    pub incident: IncidentRole,
    pub recovery: Option<Recovery>,
    pub event: SmiEventKind,
    reset_cause: Option<Regex>,
    /// A record this rule classifies, as the channel gives it.
    pub example: Option<String>,
}

impl SmiRule {
    pub fn role(&self) -> EventRole<'_> {
        EventRole {
            id: &self.id,
            class: self.class,
            incident: self.incident,
            recovery: self.recovery,
        }
    }

    fn matches(&self, record: &SmiRecord) -> bool {
        record.kind == self.event
            && self.reset_cause.as_ref().is_none_or(|cause| {
                record
                    .reset_cause
                    .as_deref()
                    .is_some_and(|text| cause.is_match(text))
            })
    }
}

/// One rule, compiled.
#[derive(Debug)]
pub struct Rule {
    pub id: Arc<str>,
    pub class: Class,
    pub incident: IncidentRole,
    pub recovery: Option<Recovery>,
    pub references: Vec<String>,
    /// A whole message this rule classifies (a user's rules may leave it out).
    pub example: Option<String>,
    pattern: String,
    has_captures: bool,
    /// The pattern on its own, compiled when a message first matches it: only a rule with
    /// captures needs it, to read its fields. Compiling every rule up front held 3 MiB of
    /// automata (BENCHMARKS.md, idle footprint) for messages a healthy node never logs.
    captures: OnceLock<Option<Regex>>,
}

impl Rule {
    /// The rule's pattern compiled on its own, built on first use. `None` only if it does not
    /// compile alone, which cannot happen once the set holding it compiled.
    fn captures(&self) -> Option<&Regex> {
        self.captures
            .get_or_init(|| Regex::new(&self.pattern).ok())
            .as_ref()
    }

    pub fn role(&self) -> EventRole<'_> {
        EventRole {
            id: &self.id,
            class: self.class,
            incident: self.incident,
            recovery: self.recovery,
        }
    }
}

/// An incident kind: the ids an incident must hold to be named so.
#[derive(Debug, Clone)]
pub struct IncidentKind {
    pub kind: Arc<str>,
    pub require: Vec<Vec<String>>,
    pub min_counts: BTreeMap<String, u32>,
    /// The GPU stopped serving work: worth keeping new pods off the node.
    pub critical: bool,
    /// What it is, as an operator reads it in a node condition or an Event.
    pub title: Option<String>,
    /// The first thing to do about it.
    pub action: Option<String>,
}

impl IncidentKind {
    pub fn matches(&self, counts: &BTreeMap<Arc<str>, u32>) -> bool {
        let count = |id: &str| counts.get(id).copied().unwrap_or(0);
        self.require
            .iter()
            .all(|group| group.iter().any(|id| count(id) > 0))
            && self.min_counts.iter().all(|(id, n)| count(id) >= *n)
    }
}

/// The result of classifying one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub rule: usize,
    /// PCI address from the message prefix.
    pub device: Option<String>,
    pub fields: BTreeMap<String, String>,
}

/// The compiled rule set.
#[derive(Debug)]
pub struct Classifier {
    /// Kernel message rules, in the order of `set`.
    rules: Vec<Rule>,
    /// KFD SMI event rules; the first that matches a record wins.
    smi_rules: Vec<SmiRule>,
    set: RegexSet,
    kinds: Vec<IncidentKind>,
    /// What to do about an incident no kind names (`unnamed_incident_actions`).
    pub unnamed_incident_action: Option<String>,
    pub incident_gap_usec: u64,
}

/// Lazy DFA cache of the rule set.
const DFA_CACHE_BYTES: usize = 32 << 20;

/// Default gap between two events of one incident when the rules file names none.
const DEFAULT_INCIDENT_GAP_SECONDS: u64 = 10;

/// How the GPU stack's own kernel messages begin: amdgpu, DRM, KFD, TTM. An unclassified record
/// that begins so is context of the classified events around it (a driver's own words, nothing
/// of another subsystem or of user space), served to any client that asks for unclassified
/// records; the rest of the log only by an agent started with `--full-kernel-log`. In a saved
/// line of no known format, the message is taken from the first of them.
pub(crate) const GPU_STACK_PREFIXES: [&str; 8] = [
    "amdgpu", "[drm", "drm:", "drmn", "kfd", "amdkfd", "[TTM]", "ttm:",
];

/// Whether a kernel message is the GPU stack's own (see [`GPU_STACK_PREFIXES`]).
pub fn is_gpu_stack_message(message: &str) -> bool {
    GPU_STACK_PREFIXES
        .iter()
        .any(|prefix| message.starts_with(prefix))
}

impl Classifier {
    /// The rules of the knowledge in effect ([`Knowledge::current`]): the embedded catalog,
    /// or what `--knowledge` made of it at start-up.
    pub fn embedded() -> Result<Self, RulesError> {
        let knowledge = Knowledge::current()?;
        Self::from_knowledge(&knowledge)
    }

    /// The embedded rules overlaid with a knowledge file's text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, RulesError> {
        let knowledge = Knowledge::overlay(&[(file.to_owned(), text.to_owned())])?;
        Self::from_knowledge(&knowledge)
    }

    /// Compiles the rules and incident kinds of a knowledge catalog.
    pub fn from_knowledge(knowledge: &Knowledge) -> Result<Self, RulesError> {
        let mut rules = Vec::new();
        let mut smi_rules = Vec::new();
        for entry in knowledge.of_kind(Kind::Rule) {
            let keys: RuleKeys = entry.body()?;
            let regex_of = |pattern: &str| {
                Regex::new(pattern).map_err(|e| RulesError::Pattern {
                    at: entry.at.clone(),
                    id: entry.id.clone(),
                    reason: e.to_string(),
                })
            };
            let incident = keys.incident.unwrap_or(if keys.class == Class::Info {
                IncidentRole::None
            } else {
                IncidentRole::Open
            });
            let shape = |reason: &str| RulesError::Shape {
                at: entry.at.clone(),
                id: entry.id.clone(),
                reason: reason.to_owned(),
            };
            let pattern = match (keys.pattern, keys.smi_event) {
                (Some(pattern), None) if keys.reset_cause.is_none() => pattern,
                (Some(_), None) => {
                    return Err(shape(
                        "`reset_cause` belongs to a KFD SMI event rule (`smi_event`)",
                    ));
                }
                (None, Some(event)) => {
                    smi_rules.push(SmiRule {
                        id: Arc::from(entry.id.as_str()),
                        class: keys.class,
                        incident,
                        recovery: keys.recovery,
                        event,
                        reset_cause: keys.reset_cause.as_deref().map(regex_of).transpose()?,
                        example: keys.example,
                    });
                    continue;
                }
                _ => {
                    return Err(shape(
                        "needs either a `pattern` (a kernel message rule) or an `smi_event` (a KFD SMI event rule)",
                    ));
                }
            };
            // Parsed, not compiled: the set below compiles every pattern, and a rule's own
            // regex is built only when a message matches it (`Rule::captures`).
            let hir =
                regex_syntax::Parser::new()
                    .parse(&pattern)
                    .map_err(|e| RulesError::Pattern {
                        at: entry.at.clone(),
                        id: entry.id.clone(),
                        reason: e.to_string(),
                    })?;
            let has_captures = hir.properties().explicit_captures_len() > 0;
            rules.push(Rule {
                id: Arc::from(entry.id.as_str()),
                class: keys.class,
                incident,
                recovery: keys.recovery,
                references: entry.references.clone(),
                example: keys.example,
                pattern,
                has_captures,
                captures: OnceLock::new(),
            });
        }
        let mut kinds = Vec::new();
        for entry in knowledge.of_kind(Kind::IncidentKind) {
            let keys: KindKeys = entry.body()?;
            kinds.push(IncidentKind {
                kind: Arc::from(entry.id.as_str()),
                require: keys.require,
                min_counts: keys.min_counts,
                critical: entry.severity == Some(Severity::Critical),
                title: Some(entry.title.clone()),
                action: entry
                    .actions
                    .first()
                    .and_then(|id| knowledge.action_of(id))
                    .map(str::to_owned),
            });
        }
        // A larger lazy-DFA cache: with ~70 patterns the default one is rebuilt over and
        // over, and matching falls back to the much slower NFA.
        let set = regex::RegexSetBuilder::new(rules.iter().map(|r| r.pattern.as_str()))
            .dfa_size_limit(DFA_CACHE_BYTES)
            .build()
            .map_err(|e| RulesError::Set(e.to_string()))?;
        Ok(Classifier {
            rules,
            smi_rules,
            set,
            kinds,
            unnamed_incident_action: knowledge
                .settings
                .unnamed_incident_actions
                .as_deref()
                .map(|actions| knowledge.action_text(actions))
                .filter(|text| !text.is_empty()),
            incident_gap_usec: knowledge
                .settings
                .incident_gap_seconds
                .unwrap_or(DEFAULT_INCIDENT_GAP_SECONDS)
                .saturating_mul(1_000_000),
        })
    }

    /// Every rule row's example classified by the whole rule set: an example another rule
    /// takes first (or none does) means the row never fires as written.
    pub fn example_errors(&self, knowledge: &Knowledge) -> Vec<RulesError> {
        let mut errors = Vec::new();
        let (message_rows, smi_rows): (Vec<_>, Vec<_>) = knowledge
            .of_kind(Kind::Rule)
            .partition(|entry| entry.body.contains_key("pattern"));
        for (entry, rule) in smi_rows.into_iter().zip(&self.smi_rules) {
            let Some(example) = rule.example.as_deref() else {
                continue;
            };
            let got = self.classify_smi(&nodectl_model::kfd_smi::parse_record(example.as_bytes()));
            if got.is_none_or(|r| r.id != rule.id) {
                errors.push(RulesError::Example {
                    at: entry.at.clone(),
                    id: entry.id.clone(),
                    example: example.to_owned(),
                    got: got.map_or("as nothing".to_owned(), |r| format!("as `{}`", r.id)),
                });
            }
        }
        for (entry, rule) in message_rows.into_iter().zip(&self.rules) {
            let Some(example) = rule.example.as_deref() else {
                continue;
            };
            let got = self.classify(example).and_then(|c| self.rule(c.rule));
            if got.is_none_or(|r| r.id != rule.id) {
                errors.push(RulesError::Example {
                    at: entry.at.clone(),
                    id: entry.id.clone(),
                    example: example.to_owned(),
                    got: got.map_or("as nothing".to_owned(), |r| format!("as `{}`", r.id)),
                });
            }
        }
        errors
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, index: usize) -> Option<&Rule> {
        self.rules.get(index)
    }

    /// The class of the rule with this id, of either source.
    pub fn class_of(&self, id: &str) -> Option<Class> {
        self.rules
            .iter()
            .find(|r| &*r.id == id)
            .map(|r| r.class)
            .or_else(|| {
                self.smi_rules
                    .iter()
                    .find(|r| &*r.id == id)
                    .map(|r| r.class)
            })
    }

    /// The first KFD SMI event rule that takes this record.
    pub fn classify_smi(&self, record: &SmiRecord) -> Option<&SmiRule> {
        self.smi_rules.iter().find(|rule| rule.matches(record))
    }

    /// The KFD SMI event rule with this id.
    pub fn smi_rule(&self, id: &str) -> Option<&SmiRule> {
        self.smi_rules.iter().find(|r| &*r.id == id)
    }

    /// Whether an incident (by its events' ids) holds an event of one of `classes`; every
    /// incident does when `classes` is empty.
    pub fn incident_has_class(
        &self,
        incident: &nodectl_model::Incident,
        classes: &[Class],
    ) -> bool {
        classes.is_empty()
            || incident
                .event_counts
                .keys()
                .any(|id| self.class_of(id).is_some_and(|c| classes.contains(&c)))
    }

    /// The example message of rule `id` (its first row that has one).
    pub fn example(&self, id: &str) -> Option<&str> {
        self.rules
            .iter()
            .filter(|r| &*r.id == id)
            .find_map(|r| r.example.as_deref())
    }

    /// The named kind, if a `[[incident_kind]]` names it (not the `gpu_<class>` fallbacks).
    pub fn kind(&self, kind: &str) -> Option<&IncidentKind> {
        self.kinds.iter().find(|k| &*k.kind == kind)
    }

    pub fn kinds(&self) -> &[IncidentKind] {
        &self.kinds
    }

    /// Whether some incident kind asks for a count of this id (`min_counts`), so that another
    /// of its events may change an incident's kind.
    pub fn counted_in_kinds(&self, id: &str) -> bool {
        self.kinds.iter().any(|k| k.min_counts.contains_key(id))
    }

    /// Classifies a kernel message. Lines without an amdgpu/KFD/DRM/TTM prefix are not
    /// looked at further (the cheap prefilter); callers pass only kernel records (facility 0).
    pub fn classify(&self, message: &str) -> Option<Classification> {
        let (device, text) = split_prefix(message)?;
        let rule = self.first_match(text)?;
        let mut fields = BTreeMap::new();
        let compiled = self.rules.get(rule)?;
        if compiled.has_captures
            && let Some(regex) = compiled.captures()
            && let Some(caps) = regex.captures(text)
        {
            for name in regex.capture_names().flatten() {
                if let Some(m) = caps.name(name) {
                    fields.insert(name.to_owned(), m.as_str().trim().to_owned());
                }
            }
        }
        if let Some(device) = device {
            fields.insert("pci".to_owned(), device.to_owned());
        }
        Some(Classification {
            rule,
            device: device.map(str::to_owned),
            fields,
        })
    }

    fn first_match(&self, text: &str) -> Option<usize> {
        // RegexSet answers all rules in one pass; most texts match none or one.
        self.set.matches(text).iter().next()
    }
}

fn is_pci_address(text: &str) -> bool {
    // `0000:c1:00.0`
    let b = text.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// Splits the driver prefix off a message: (PCI address, text after the prefixes). `None` when
/// the line is not from amdgpu, KFD, DRM or TTM.
pub fn split_prefix(message: &str) -> Option<(Option<&str>, &str)> {
    let mut device = None;
    let mut text = message;
    let mut matched = false;
    loop {
        if let Some(rest) = text.strip_prefix("amdgpu ") {
            // dev_* form: `amdgpu 0000:c1:00.0: text`
            let (addr, after) = rest.split_once(": ")?;
            if device.is_some() || !is_pci_address(addr) {
                return None;
            }
            device = Some(addr);
            text = after;
        } else if let Some(rest) = text
            .strip_prefix("amdgpu: ")
            .or_else(|| text.strip_prefix("kfd kfd: "))
            .or_else(|| text.strip_prefix("[drm] "))
            .or_else(|| text.strip_prefix("[TTM] "))
        {
            text = rest;
        } else if let Some(rest) = text.strip_prefix("[drm:") {
            // `[drm:amdgpu_job_timedout [amdgpu]] text`
            let end = rest.find("] ")?;
            let after = rest.get(end + 2..)?;
            text = after.strip_prefix("] ").unwrap_or(after);
        } else if let Some(rest) = text
            .strip_prefix("[drm ERROR :")
            .or_else(|| text.strip_prefix("[drm WARN :"))
            .or_else(|| text.strip_prefix("[drm INFO :"))
        {
            // FreeBSD drm-kmod's DRM_ERROR: `[drm ERROR :amdgpu_job_timedout] text`
            let (_function, after) = rest.split_once("] ")?;
            text = after;
        } else if let Some(rest) = text.strip_prefix("drmn")
            && let Some((unit, after)) = rest.split_once(": ")
            && !unit.is_empty()
            && unit.bytes().all(|b| b.is_ascii_digit())
        {
            // FreeBSD drm-kmod's dev_* lines: `drmn0: text` (the device unit, no PCI address).
            text = after;
        } else if matched {
            if let Some(rest) = text.strip_prefix("*ERROR* ") {
                text = rest;
            }
            return Some((device, text));
        } else {
            return None;
        }
        matched = true;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Compiled once: proptest runs hundreds of cases.
    static SHARED: std::sync::LazyLock<Classifier> =
        std::sync::LazyLock::new(|| Classifier::embedded().unwrap());

    fn id_of(c: &Classifier, message: &str) -> Option<String> {
        c.classify(message)
            .map(|x| c.rule(x.rule).unwrap().id.to_string())
    }

    #[test]
    fn every_embedded_rule_row_has_an_example_that_it_classifies() {
        let c = &*SHARED;
        for (index, rule) in c.rules().iter().enumerate() {
            let example = rule
                .example
                .as_deref()
                .unwrap_or_else(|| panic!("rule row {index} `{}` has no example", rule.id));
            let classified = c.classify(example).unwrap_or_else(|| {
                panic!("`{}`: its example is not classified: {example}", rule.id)
            });
            assert_eq!(
                c.rule(classified.rule).map(|r| &*r.id),
                Some(&*rule.id),
                "{example}"
            );
        }
        assert!(c.example("mes_timeout").is_some());
        assert!(c.example("no_such_rule").is_none());
    }

    #[test]
    fn strips_all_three_prefix_styles() {
        let c = Classifier::embedded().unwrap();
        for message in [
            "amdgpu 0000:c1:00.0: amdgpu: ring gfx_0.0.0 timeout, signaled seq=1, emitted seq=3",
            "amdgpu 0000:c1:00.0: ring gfx_0.0.0 timeout, signaled seq=1, emitted seq=3",
            "[drm:amdgpu_job_timedout [amdgpu]] *ERROR* ring gfx_0.0.0 timeout, signaled seq=1, emitted seq=3",
        ] {
            let x = c.classify(message).unwrap();
            assert_eq!(&*c.rule(x.rule).unwrap().id, "ring_timeout", "{message}");
            assert_eq!(x.fields["ring"], "gfx_0.0.0");
            assert_eq!(x.fields["emitted_seq"], "3");
        }
        let x = c
            .classify("amdgpu 0000:c1:00.0: amdgpu: ring gfx_0.0.0 timeout, signaled seq=1, emitted seq=3")
            .unwrap();
        assert_eq!(x.device.as_deref(), Some("0000:c1:00.0"));
    }

    #[test]
    fn extracts_the_fields_of_the_catalogue() {
        let c = Classifier::embedded().unwrap();
        let x = c
            .classify(
                "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=MISC (WAIT_REG_MEM)",
            )
            .unwrap();
        assert_eq!(&*c.rule(x.rule).unwrap().id, "mes_timeout");
        assert_eq!(x.fields["mes_op"], "MISC");
        assert_eq!(x.fields["mes_misc_op"], "WAIT_REG_MEM");
        let x = c
            .classify("amdgpu 0000:c1:00.0: amdgpu: failed to remove hardware queue from MES, doorbell=0x1002")
            .unwrap();
        assert_eq!(x.fields["doorbell"], "0x1002");
        let x = c
            .classify("amdgpu 0000:c1:00.0: amdgpu: [gfxhub] page fault (src_id:0 ring:24 vmid:8 pasid:32769)")
            .unwrap();
        assert_eq!(
            (x.fields["ring"].as_str(), x.fields["pasid"].as_str()),
            ("24", "32769")
        );
        let x = c
            .classify("amdgpu 0000:c1:00.0: amdgpu:   in page starting at address 0x00007f1234560000 from client 10")
            .unwrap();
        assert_eq!(x.fields["fault_address"], "0x00007f1234560000");
        let x = c
            .classify("amdgpu 0000:c1:00.0: amdgpu:  Process llama-server pid 4242 thread llama-server pid 4250")
            .unwrap();
        assert_eq!(
            (x.fields["process"].as_str(), x.fields["pid"].as_str()),
            ("llama-server", "4242")
        );
        assert_eq!(
            id_of(&c, "amdgpu: unknown parameter 'gtt_size' ignored").as_deref(),
            Some("unknown_module_parameter")
        );
        assert_eq!(
            id_of(&c, "[TTM] Buffer eviction failed").as_deref(),
            Some("ttm_eviction_failed")
        );
        assert_eq!(
            id_of(&c, "[drm] device wedged, but recovered through reset").as_deref(),
            Some("device_wedged_recovered")
        );
        assert_eq!(
            id_of(&c, "amdgpu: No more SDMA queue to allocate").as_deref(),
            Some("sdma_queue_exhausted")
        );
        assert_eq!(
            id_of(
                &c,
                "amdgpu 0000:c1:00.0: amdgpu: GPU reset begin!. Source:  1"
            )
            .as_deref(),
            Some("gpu_reset_begin")
        );
        assert_eq!(
            id_of(
                &c,
                "amdgpu 0000:c1:00.0: amdgpu: GPU reset end with ret = 0"
            )
            .as_deref(),
            Some("gpu_reset_end")
        );
    }

    #[test]
    fn leaves_other_lines_alone() {
        let c = Classifier::embedded().unwrap();
        assert_eq!(id_of(&c, "usb 1-1: new high-speed USB device"), None);
        assert_eq!(id_of(&c, "MES failed to respond to msg=REMOVE_QUEUE"), None);
        assert_eq!(
            id_of(&c, "amdgpu 0000:c1:00.0: amdgpu: SE 1, SH per SE 2"),
            None
        );
        assert_eq!(
            id_of(
                &c,
                "amdgpu notapci: ring x timeout, signaled seq=1, emitted seq=2"
            ),
            None
        );
    }

    #[test]
    fn bad_rules_name_the_file_and_the_line() {
        let row = |id: &str, class: &str, pattern: &str| {
            format!(
                "[[rule]]\nid = \"{id}\"\nseverity = \"info\"\ntitle = \"t\"\nclass = \"{class}\"\npattern = '{pattern}'\nexample = 'amdgpu: a'\n"
            )
        };
        let text = format!(
            "{}\n{}",
            row("ok", "info", "^a"),
            row("broken", "info", "(unclosed")
        );
        let e = Classifier::from_toml(&text, "my.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("my.toml:9: rule `broken`: bad pattern"), "{e}");
        let e = Classifier::from_toml(&row("x", "nope", "a"), "f.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.toml:1: rule `x`") && e.contains("nope"),
            "{e}"
        );
        let e = Classifier::from_toml(
            "[[incident_kind]]\nid = \"k\"\nseverity = \"warning\"\ntitle = \"t\"\nactions = [\"reboot_node\"]\nrequire = [[\"y\"]]\n",
            "g.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("g.toml:1: incident_kind `k`") && e.contains("`y`"),
            "{e}"
        );
    }

    #[test]
    fn a_kfd_rule_takes_records_by_event_and_cause_and_is_one_or_the_other() {
        use nodectl_model::kfd_smi::parse_record;
        let c = &*SHARED;
        let id = |line: &str| {
            c.classify_smi(&parse_record(line.as_bytes()))
                .map(|r| &*r.id)
        };
        assert_eq!(id("3 1 MES hang"), Some("kfd_smi_mes_hang_reset"));
        assert_eq!(
            id("3 2 job hang on ring:gfx_0.0.0"),
            Some("kfd_smi_gpu_pre_reset")
        );
        // An older kernel's pre-reset names no cause: a reset, not a MES hang.
        assert_eq!(id("3 1"), Some("kfd_smi_gpu_pre_reset"));
        assert_eq!(id("4 1 "), Some("kfd_smi_gpu_post_reset"));
        assert_eq!(id("9 90000000000 -4321 d2bb 1"), None);
        assert_eq!(c.class_of("kfd_smi_vm_fault"), Some(Class::Fault));
        let row = |keys: &str| {
            format!(
                "[[rule]]\nid = \"both\"\nseverity = \"info\"\ntitle = \"t\"\nclass = \"info\"\n{keys}\nexample = '3 1 x'\n"
            )
        };
        for keys in [
            "pattern = '^a'\nsmi_event = \"gpu_pre_reset\"",
            "",
            "pattern = '^a'\nreset_cause = 'x'",
        ] {
            let e = Classifier::from_toml(&row(keys), "mine.toml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("mine.toml:1: rule `both`"), "{e}");
        }
        let e = Classifier::from_toml(&row("smi_event = \"gpu_reset\""), "mine.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mine.toml:1") && e.contains("gpu_reset"), "{e}");
    }

    #[test]
    fn every_shipped_example_is_classified_by_its_own_rule() {
        let k = Knowledge::embedded().unwrap();
        let c = Classifier::from_knowledge(&k).unwrap();
        let errors: Vec<String> = c.example_errors(&k).iter().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let shadowed = "[[rule]]\nid = \"greedy\"\nseverity = \"info\"\ntitle = \"t\"\nclass = \"info\"\npattern = '^MES'\nexample = 'amdgpu: MES x'\n";
        let k = Knowledge::overlay(&[("mine.toml".into(), shadowed.into())]).unwrap();
        let c = Classifier::from_knowledge(&k).unwrap();
        let errors: Vec<String> = c.example_errors(&k).iter().map(|e| e.to_string()).collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("rule `mes_timeout`") && e.contains("as `greedy`")),
            "{errors:#?}"
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_random_text(text in "\\PC{0,200}") {
            let c = &*SHARED;
            let _ = c.classify(&text);
            let _ = c.classify(&format!("amdgpu 0000:c1:00.0: amdgpu: {text}"));
            let _ = c.classify(&format!("[drm:x [amdgpu]] *ERROR* {text}"));
        }

        #[test]
        fn never_panics_on_mutated_catalogue_lines(pick in 0usize..6, cut in 0usize..100, insert in "\\PC{0,8}") {
            let c = &*SHARED;
            let lines = [
                "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=MISC (WAIT_REG_MEM)",
                "amdgpu 0000:c1:00.0: amdgpu: [gfxhub] page fault (src_id:0 ring:24 vmid:8 pasid:32769)",
                "amdgpu 0000:c1:00.0: amdgpu:  Process llama-server pid 4242 thread llama-server pid 4250",
                "[drm:amdgpu_job_timedout [amdgpu]] *ERROR* ring gfx_0.0.0 timeout, signaled seq=1, emitted seq=3",
                "amdgpu: Failed to evict queues of process pid 12",
                "amdgpu 0000:c1:00.0: amdgpu: GPU reset(2) succeeded!",
            ];
            let line = lines[pick];
            let cut = (0..=cut.min(line.len())).rev().find(|i| line.is_char_boundary(*i)).unwrap_or(0);
            let mutated = format!("{}{}{}", &line[..cut], insert, &line[cut..]);
            let _ = c.classify(&mutated);
        }
    }
}
