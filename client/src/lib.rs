//! nodectl: the client library behind the `nodectl` binary (CLI, node access, rendering, Talos plans).

pub mod cli;
pub mod cmd;
pub mod config;
pub mod context;
pub mod discover;
pub mod duration;
pub mod embedded;
pub mod exit;
pub mod fleet;
pub mod llama_probe;
pub mod nodes;
pub mod render;
pub mod talos;
