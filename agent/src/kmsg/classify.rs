//! Classifies amdgpu/KFD kernel messages with rules kept as data (embedded TOML, or a user file of the same format).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use nodectl_model::Class;
use regex::{Regex, RegexSet};

/// The embedded rules: the message catalogue of amdgpu and KFD.
pub const EMBEDDED_RULES: &str = include_str!("rules.toml");

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

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleRow {
    id: String,
    class: Class,
    pattern: String,
    incident: Option<IncidentRole>,
    recovery: Option<Recovery>,
    #[allow(dead_code)]
    summary: Option<String>,
    #[serde(default)]
    references: Vec<String>,
    example: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KindRow {
    kind: String,
    #[serde(default)]
    require: Vec<Vec<String>>,
    #[serde(default)]
    min_counts: BTreeMap<String, u32>,
    #[serde(default)]
    critical: bool,
    title: Option<String>,
    action: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    incident_gap_seconds: Option<u64>,
    #[serde(default)]
    rule: Vec<RuleRow>,
    #[serde(default)]
    incident_kind: Vec<KindRow>,
}

/// A rules file that cannot be used; the message names the file and the rule.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: not valid rules TOML: {reason}")]
    Toml { file: String, reason: String },
    #[error("{file}: rule {index} (`{id}`): bad pattern: {reason}")]
    Pattern {
        file: String,
        index: usize,
        id: String,
        reason: String,
    },
    #[error("{file}: rule {index}: {reason}")]
    Rule {
        file: String,
        index: usize,
        reason: String,
    },
    #[error("{file}: incident_kind `{kind}`: {reason}")]
    Kind {
        file: String,
        kind: String,
        reason: String,
    },
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
    regex: Regex,
    has_captures: bool,
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
    rules: Vec<Rule>,
    set: RegexSet,
    kinds: Vec<IncidentKind>,
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
    /// The embedded rules.
    pub fn embedded() -> Result<Self, RulesError> {
        Self::from_toml(EMBEDDED_RULES, "embedded rules")
    }

    /// Rules from a file (`--rules FILE`).
    pub fn from_file(path: &Path) -> Result<Self, RulesError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_toml(&text, &file)
    }

    /// The embedded rules, or the file's when one is given.
    pub fn load(path: Option<&Path>) -> Result<Self, RulesError> {
        match path {
            Some(path) => Self::from_file(path),
            None => Self::embedded(),
        }
    }

    /// Parses and compiles rules; `file` names the source in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, RulesError> {
        let parsed: RulesFile = toml::from_str(text).map_err(|e| RulesError::Toml {
            file: file.to_owned(),
            reason: e.to_string(),
        })?;
        let mut rules = Vec::with_capacity(parsed.rule.len());
        for (index, row) in parsed.rule.into_iter().enumerate() {
            let index = index + 1;
            if row.id.is_empty()
                || !row
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(RulesError::Rule {
                    file: file.to_owned(),
                    index,
                    reason: format!("id `{}` must be lower_snake_case", row.id),
                });
            }
            let regex = Regex::new(&row.pattern).map_err(|e| RulesError::Pattern {
                file: file.to_owned(),
                index,
                id: row.id.clone(),
                reason: e.to_string(),
            })?;
            let has_captures = regex.captures_len() > 1;
            let incident = row.incident.unwrap_or(if row.class == Class::Info {
                IncidentRole::None
            } else {
                IncidentRole::Open
            });
            rules.push(Rule {
                id: Arc::from(row.id),
                class: row.class,
                incident,
                recovery: row.recovery,
                references: row.references,
                example: row.example,
                regex,
                has_captures,
            });
        }
        let ids: std::collections::BTreeSet<&str> = rules.iter().map(|r| &*r.id).collect();
        let mut kinds = Vec::with_capacity(parsed.incident_kind.len());
        for row in parsed.incident_kind {
            let unknown = row
                .require
                .iter()
                .flatten()
                .chain(row.min_counts.keys())
                .find(|id| !ids.contains(id.as_str()));
            if let Some(id) = unknown {
                return Err(RulesError::Kind {
                    file: file.to_owned(),
                    kind: row.kind,
                    reason: format!("names `{id}`, which no rule has"),
                });
            }
            kinds.push(IncidentKind {
                kind: Arc::from(row.kind),
                require: row.require,
                min_counts: row.min_counts,
                critical: row.critical,
                title: row.title,
                action: row.action,
            });
        }
        // A larger lazy-DFA cache: with ~70 patterns the default one is rebuilt over and
        // over, and matching falls back to the much slower NFA.
        let set = regex::RegexSetBuilder::new(rules.iter().map(|r| r.regex.as_str()))
            .dfa_size_limit(DFA_CACHE_BYTES)
            .build()
            .map_err(|e| RulesError::Toml {
                file: file.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Classifier {
            rules,
            set,
            kinds,
            incident_gap_usec: parsed
                .incident_gap_seconds
                .unwrap_or(DEFAULT_INCIDENT_GAP_SECONDS)
                .saturating_mul(1_000_000),
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, index: usize) -> Option<&Rule> {
        self.rules.get(index)
    }

    /// The class of the rule with this id.
    pub fn class_of(&self, id: &str) -> Option<Class> {
        self.rules.iter().find(|r| &*r.id == id).map(|r| r.class)
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
            && let Some(caps) = compiled.regex.captures(text)
        {
            for name in compiled.regex.capture_names().flatten() {
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
    fn bad_rules_name_the_file_and_the_rule() {
        let text = "[[rule]]\nid = \"ok\"\nclass = \"hang\"\npattern = 'a'\n[[rule]]\nid = \"broken\"\nclass = \"hang\"\npattern = '(unclosed'\n";
        let e = Classifier::from_toml(text, "my.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("my.toml") && e.contains("rule 2") && e.contains("broken"),
            "{e}"
        );
        let e = Classifier::from_toml(
            "[[rule]]\nid = \"x\"\nclass = \"nope\"\npattern = 'a'\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f.toml"), "{e}");
        let e = Classifier::from_toml(
            "[[rule]]\nid = \"x\"\nclass = \"hang\"\npattern = 'a'\n[[incident_kind]]\nkind = \"k\"\nrequire = [[\"y\"]]\n",
            "g.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("g.toml") && e.contains("`k`") && e.contains("`y`"),
            "{e}"
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
