//! nodectl: the client library behind the `nodectl` binary (CLI, agent access, rendering, Talos).

pub mod cli;
pub mod events;
pub mod exit;
pub mod node;
pub mod output;
pub mod source;
pub mod talos;
