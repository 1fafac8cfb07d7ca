//! Asking several nodes at once: each within its own deadline, a node that fails kept as a failed answer beside the others, and the exit code of them all.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::exit::ExitStatus;
use crate::nodes::Target;

/// `--node-timeout`'s default: a snapshot takes well under a second; a hung SMU costs an
/// agent 2 s per stuck file, and a node that has not answered in 10 s is reported as failed
/// rather than holding up the others.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// Nodes asked at the same time: each costs a connection and its reply in memory, so a fleet of
/// hundreds is asked in waves rather than all at once (the per-node deadline still holds for
/// each, counted from when it is asked).
pub const MAX_NODES_AT_ONCE: usize = 64;

/// Why a node gave no answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub reason: String,
    /// It could not be reached at all (refused, timed out, unavailable).
    #[serde(skip)]
    pub unreachable: bool,
}

impl Failure {
    fn of(error: &anyhow::Error) -> Self {
        Failure {
            reason: crate::render::escape_controls(&format!("{error:#}")).into_owned(),
            unreachable: error.chain().any(|c| c.is::<crate::exit::Unreachable>()),
        }
    }
}

/// One node's answer, or why there is none.
#[derive(Debug)]
pub struct Answer<T> {
    /// The endpoint (or tree) the node was asked at.
    pub label: String,
    pub target: Target,
    pub result: Result<T, Failure>,
}

/// Asks every target with `ask`, at most [`MAX_NODES_AT_ONCE`] at a time, each within
/// `deadline` (agents only: the in-process agent bounds its own reads). Answers come back in
/// the order of `targets`; a node that fails or runs out of time is an answer too.
pub async fn ask_each<T, F, Fut>(targets: Vec<Target>, deadline: Duration, ask: F) -> Vec<Answer<T>>
where
    T: Send + 'static,
    F: Fn(Target) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    ask_each_limited(targets, deadline, MAX_NODES_AT_ONCE, ask).await
}

/// [`ask_each`] with at most `at_once` nodes asked at a time (for work that holds much memory
/// per node).
pub async fn ask_each_limited<T, F, Fut>(
    targets: Vec<Target>,
    deadline: Duration,
    at_once: usize,
    ask: F,
) -> Vec<Answer<T>>
where
    T: Send + 'static,
    F: Fn(Target) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(at_once.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let count = targets.len();
    for (index, target) in targets.iter().cloned().enumerate() {
        let remote = matches!(target, Target::Agent(_));
        let work = ask(target);
        let permits = Arc::clone(&permits);
        tasks.spawn(async move {
            // The semaphore is never closed, so the permit always comes.
            let _permit = permits.acquire_owned().await;
            // The deadline counts from here: a node waiting for its turn is not late.
            let result = if remote {
                match tokio::time::timeout(deadline, work).await {
                    Ok(result) => result,
                    Err(_) => Err(anyhow::Error::new(crate::exit::Unreachable(format!(
                        "no answer within {} (--node-timeout)",
                        humanize(deadline)
                    )))),
                }
            } else {
                work.await
            };
            (index, result)
        });
    }
    let mut results: Vec<Option<anyhow::Result<T>>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, result)) => {
                if let Some(slot) = results.get_mut(index) {
                    *slot = Some(result);
                }
            }
            // A task that panicked took its index with it; its slot stays empty and is
            // reported as failed below.
            Err(e) => tracing::error!("asking a node failed: {e}"),
        }
    }
    targets
        .into_iter()
        .zip(results)
        .map(|(target, result)| Answer {
            label: target.label(),
            result: match result {
                Some(Ok(value)) => Ok(value),
                Some(Err(e)) => Err(Failure::of(&e)),
                None => Err(Failure {
                    reason: "asking this node failed inside nodectl (see the log above)".to_owned(),
                    unreachable: false,
                }),
            },
            target,
        })
        .collect()
}

/// `10s`, `1.5s`, `250ms`.
fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.as_secs() == 0 {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

/// The exit of a command over several nodes: the worst outcome of those that answered, where a
/// node that gave no answer counts as a check that could not run (exit 4) unless one that
/// answered had a critical finding; when no node answered, the nodes could not be reached
/// (exit 3).
pub fn outcome_of<T>(answers: &[Answer<T>], outcome: impl Fn(&T) -> ExitStatus) -> ExitStatus {
    let mut answered = 0usize;
    let mut worst = ExitStatus::Ok;
    let mut any_failed = false;
    for answer in answers {
        match &answer.result {
            Ok(value) => {
                answered += 1;
                worst = worst.max(outcome(value));
            }
            Err(_) => any_failed = true,
        }
    }
    if answered == 0 && any_failed {
        return ExitStatus::Unreachable;
    }
    if any_failed {
        worst = worst.max(ExitStatus::CriticalUnknown);
    }
    worst
}

/// `N nodes: A answered, F failed` and one line per failed node, for the end of a table.
pub fn failures_text<T>(answers: &[Answer<T>]) -> String {
    let failed: Vec<&Answer<T>> = answers.iter().filter(|a| a.result.is_err()).collect();
    let mut out = format!(
        "{} nodes: {} answered, {} failed\n",
        answers.len(),
        answers.len() - failed.len(),
        failed.len()
    );
    for answer in failed {
        if let Err(failure) = &answer.result {
            out.push_str(&format!("  FAILED {}: {}\n", answer.label, failure.reason));
        }
    }
    out
}

/// One node in a `-o json|yaml` document of several: its answer, or why there is none.
#[derive(Debug, serde::Serialize)]
pub struct NodeDocument<'a, T: serde::Serialize> {
    /// The endpoint it was asked at.
    pub source: &'a str,
    /// `ok` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub answer: Option<&'a T>,
}

impl<T> Answer<T> {
    /// This answer as an entry of a document of several nodes, the value under its own keys.
    pub fn document(&self) -> NodeDocument<'_, T>
    where
        T: serde::Serialize,
    {
        match &self.result {
            Ok(value) => NodeDocument {
                source: &self.label,
                status: "ok",
                error: None,
                answer: Some(value),
            },
            Err(failure) => NodeDocument {
                source: &self.label,
                status: "failed",
                error: Some(&failure.reason),
                answer: None,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn answer(result: Result<ExitStatus, &str>) -> Answer<ExitStatus> {
        Answer {
            label: "x".to_owned(),
            target: Target::Agent(crate::nodes::AgentEndpoint::plain("http://127.0.0.1:1")),
            result: result.map_err(|r| Failure {
                reason: r.to_owned(),
                unreachable: true,
            }),
        }
    }

    #[test]
    fn the_exit_is_the_worst_answer_and_three_only_when_nobody_answered() {
        let of = |answers: Vec<Answer<ExitStatus>>| outcome_of(&answers, |o| *o);
        assert_eq!(of(vec![answer(Ok(ExitStatus::Ok))]), ExitStatus::Ok);
        assert_eq!(
            of(vec![answer(Ok(ExitStatus::Ok)), answer(Err("refused"))]),
            ExitStatus::CriticalUnknown
        );
        assert_eq!(
            of(vec![
                answer(Ok(ExitStatus::Critical)),
                answer(Err("refused"))
            ]),
            ExitStatus::Critical
        );
        assert_eq!(
            of(vec![answer(Err("refused")), answer(Err("timed out"))]),
            ExitStatus::Unreachable
        );
        assert_eq!(of(vec![]), ExitStatus::Ok);
    }

    #[tokio::test]
    async fn a_node_that_does_not_answer_costs_its_deadline_and_no_more() {
        let targets: Vec<Target> = (0..100)
            .map(|i| {
                Target::Agent(crate::nodes::AgentEndpoint::plain(&format!(
                    "http://127.0.0.1:{}",
                    1000 + i
                )))
            })
            .collect();
        let started = std::time::Instant::now();
        let answers = ask_each(targets, Duration::from_millis(200), |target| async move {
            if target.label().ends_with("1007") {
                std::future::pending::<()>().await;
            }
            Ok(target.label())
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(answers.len(), 100);
        assert_eq!(
            answers[3].result.as_deref().unwrap(),
            "http://127.0.0.1:1003"
        );
        let failure = answers[7].result.as_ref().unwrap_err();
        assert!(
            failure.unreachable && failure.reason.contains("200ms"),
            "{failure:?}"
        );
    }
}
