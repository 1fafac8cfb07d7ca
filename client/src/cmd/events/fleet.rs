//! `nodectl events` over several agents: each node's history read concurrently within its deadline, the events merged in time order and tagged with their node, failed nodes listed.

use nodectl_model::{Class, KernelEvent};
use tokio_stream::StreamExt as _;

use super::{EventsArgs, EventsLayout, EventsReport, Printer};
use crate::context::Context;
use crate::embedded::EmbeddedOptions;
use crate::exit::ExitStatus;
use crate::fleet::{Answer, ask_each};
use crate::nodes::{KernelEventsRequest, Target};
use crate::render;

/// An event with the node it came from.
#[derive(Debug, serde::Serialize)]
struct TaggedEvent {
    node: String,
    #[serde(flatten)]
    event: KernelEvent,
}

/// `-o json|yaml`: each node's report (its events moved to the merged list), then the events.
#[derive(serde::Serialize)]
struct FleetEvents<'a> {
    nodes: Vec<crate::fleet::NodeDocument<'a, EventsReport>>,
    events: &'a [TaggedEvent],
}

pub(super) async fn run(
    args: &EventsArgs,
    classes: Vec<Class>,
    since_cursor: std::collections::BTreeMap<nodectl_model::Source, u64>,
    targets: Vec<Target>,
    ctx: &Context,
) -> anyhow::Result<ExitStatus> {
    let request = KernelEventsRequest {
        since_cursor,
        follow: false,
        classes,
        include_unclassified: args.include_unclassified,
    };
    let (format, summary) = (ctx.format, args.summary);
    let mut answers = ask_each(targets, ctx.node_timeout(), move |target| {
        read_node(target, request.clone(), format, summary)
    })
    .await;
    let mut events: Vec<TaggedEvent> = Vec::new();
    for answer in &mut answers {
        if let Ok(report) = &mut answer.result {
            events.extend(std::mem::take(&mut report.events).into_iter().map(|event| {
                TaggedEvent {
                    node: answer.label.clone(),
                    event,
                }
            }));
        }
    }
    // Time order across nodes; events without a wall time keep their node's order, last.
    events.sort_by(|a, b| match (a.event.time, b.event.time) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let document = FleetEvents {
        nodes: answers.iter().map(Answer::document).collect(),
        events: &events,
    };
    if !render::print_structured(&document, format)? {
        render::emit(&fleet_table(&answers, &events))?;
    }
    Ok(crate::fleet::outcome_of(&answers, |_| ExitStatus::Ok))
}

/// One node's events and incidents, as `events` without --follow collects them.
async fn read_node(
    target: Target,
    request: KernelEventsRequest,
    format: render::Format,
    summary: bool,
) -> anyhow::Result<EventsReport> {
    let options = EmbeddedOptions { kernel_log: true };
    let mut client = target.connect(&options).await?;
    let mut stream = client.kernel_events(request).await?;
    let mut printer = Printer::new(format, false, summary)?;
    while let Some(message) = stream.next().await {
        printer.message(message?)?;
    }
    Ok(printer.into_report())
}

/// The merged events with a NODE column, then each node's incidents and notes, then the
/// nodes that failed.
fn fleet_table(answers: &[Answer<EventsReport>], events: &[TaggedEvent]) -> String {
    let mut out = String::new();
    if !events.is_empty() {
        let layout = EventsLayout::of_each(events.iter().map(|e| &e.event));
        let mut header = vec!["NODE"];
        header.extend(layout.header());
        let mut t = render::table_wrapping(&header, &[header.len() - 1]);
        for tagged in events {
            let mut row = vec![tagged.node.clone()];
            row.extend(layout.row(&tagged.event));
            t.add_row(row);
        }
        out.push_str(&format!("{}{t}\n", layout.preamble()));
    }
    out.push_str(&format!(
        "{} event{}.\n",
        events.len(),
        if events.len() == 1 { "" } else { "s" }
    ));
    for answer in answers {
        let Ok(report) = &answer.result else { continue };
        out.push_str(&format!("\nnode {}\n", answer.label));
        out.push_str(&super::counts_table(&report.tail));
        if report.incidents.is_empty() {
            out.push_str("No incidents.\n");
        } else {
            out.push_str(&super::incidents_table(&report.incidents));
        }
        out.push_str(&super::notes(&report.tail));
    }
    out.push('\n');
    out.push_str(&crate::fleet::failures_text(answers));
    out
}
