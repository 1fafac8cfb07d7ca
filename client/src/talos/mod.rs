//! Talos: talosconfig, the mutual-TLS API client, the machine-config engine, the Image Factory, and changes to a node as plans.

pub mod api;
pub mod factory;
pub mod kernel_args;
pub mod machine_config;
pub mod plan;
pub mod talosconfig;
pub mod tls;
pub mod workflow;
