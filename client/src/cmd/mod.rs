//! One module per subcommand; each takes the [`crate::context::Context`] and returns an outcome.

pub mod cwsr;
pub mod diagnose;
pub mod events;
pub mod experiment;
pub mod knowledge;
pub mod node;
pub mod report;
pub mod talos;
