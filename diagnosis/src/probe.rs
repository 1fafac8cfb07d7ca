//! What a live llama-server answered when asked where it is: the diagnosis's view of the probe (`nodectl diagnose --url` asks).

use serde::Serialize;

/// What `/health` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Nothing listens: the process is not up (or not yet bound).
    Refused,
    /// 503: the model is loading (any phase before ready).
    Loading,
    /// 200: ready.
    Ready,
    /// The connection was accepted but no answer came in time: the HTTP threads are stuck too.
    NoAnswer,
    /// Another status or error.
    Other,
}

#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub url: String,
    pub health: Health,
    /// `/health`'s status code and text, or the error.
    pub health_detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_ctx: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_slots: Option<u64>,
    /// Slots processing a request now (from `/slots`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots_processing: Option<u64>,
    /// `/health` answered but `/slots` did not within the probe's deadline: `/slots` goes
    /// through the server's task loop, so the loop is busy or stuck.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slots_no_answer: bool,
    /// `/metrics` answered (the server runs with `--metrics`).
    pub metrics_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_processing: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_predicted_total: Option<f64>,
}

impl Probe {
    /// A probe of `url` before anything answered: every reading absent.
    pub fn new(url: String) -> Self {
        Probe {
            url,
            health: Health::Other,
            health_detail: String::new(),
            build_info: None,
            model_path: None,
            n_ctx: None,
            total_slots: None,
            slots_processing: None,
            slots_no_answer: false,
            metrics_enabled: false,
            requests_processing: None,
            tokens_predicted_total: None,
        }
    }
}
