//! Talos: talosconfig, the mutual-TLS API client, the machine-config engine, the Image Factory and the commands built on them.

pub mod api;
pub mod apply_patch;
pub mod cwsr;
pub mod factory;
pub mod kernel_args;
pub mod machine_config;
pub mod talosconfig;
pub mod tls;
pub mod workflow;
