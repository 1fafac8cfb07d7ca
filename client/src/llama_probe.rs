//! A live llama-server asked where it is: `/health` (refused, 503 loading, 200 ready), `/props`, `/slots` and `/metrics` when they answer.

use std::time::Duration;

use nodectl_diagnosis::probe::{Health, Probe};

/// How long one endpoint may take: a loading server answers `/health` at once (its HTTP
/// threads start before the model loads); one that does not answer in this time is noted so.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes read of one answer: `/props` holds the chat template (a few KiB to ~100 KiB), `/slots`
/// a few KiB per slot, `/metrics` a few KiB.
const MAX_PROBE_BODY_BYTES: usize = 1024 * 1024;

/// `http://HOST:PORT` (a trailing `/` allowed); anything else is an input error.
pub fn check_url(url: &str) -> anyhow::Result<String> {
    let base = url.trim_end_matches('/');
    let Some(rest) = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
    else {
        anyhow::bail!("--url {url}: expected http://HOST:PORT of a llama-server");
    };
    if rest.contains('@') {
        // Credentials in a URL would be echoed in the diagnosis and a bundle: refused, and
        // not repeated in the error either.
        anyhow::bail!(
            "--url: a user or password in the URL is not taken (it would be shown and stored); give http://HOST:PORT"
        );
    }
    if rest.is_empty() || rest.contains('/') {
        anyhow::bail!("--url {url}: expected http://HOST:PORT of a llama-server, without a path");
    }
    Ok(base.to_owned())
}

/// Asks the server; never fails: what did not answer says so in the result.
pub async fn probe(base: &str) -> anyhow::Result<Probe> {
    crate::talos::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .connect_timeout(PROBE_CONNECT_TIMEOUT)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
    let mut out = Probe::new(base.to_owned());
    match get(&http, &format!("{base}/health")).await {
        Ok((status, body)) => {
            out.health = match status {
                200 => Health::Ready,
                503 => Health::Loading,
                _ => Health::Other,
            };
            out.health_detail = format!("{status} {}", String::from_utf8_lossy(&body).trim());
        }
        Err(e) => {
            out.health = if e.is_connect() {
                Health::Refused
            } else if e.is_timeout() {
                Health::NoAnswer
            } else {
                Health::Other
            };
            out.health_detail = crate::exit::error_chain(&e);
            return Ok(out);
        }
    }
    if let Ok((200, body)) = get(&http, &format!("{base}/props")).await
        && let Ok(props) = serde_json::from_slice::<serde_json::Value>(&body)
    {
        out.build_info = props["build_info"].as_str().map(str::to_owned);
        out.model_path = props["model_path"].as_str().map(str::to_owned);
        out.total_slots = props["total_slots"].as_u64();
        out.n_ctx = props["default_generation_settings"]["n_ctx"].as_u64();
    }
    match get(&http, &format!("{base}/slots")).await {
        Ok((200, body)) => {
            if let Ok(serde_json::Value::Array(slots)) = serde_json::from_slice(&body) {
                let busy = slots
                    .iter()
                    .filter(|s| s["is_processing"].as_bool().unwrap_or(false))
                    .count();
                out.slots_processing = Some(busy as u64);
            }
        }
        // Disabled (`--no-slots`: 501) or another status is no verdict; silence is.
        Ok(_) => {}
        Err(e) => out.slots_no_answer = e.is_timeout(),
    }
    if let Ok((200, body)) = get(&http, &format!("{base}/metrics")).await {
        let text = String::from_utf8_lossy(&body);
        out.metrics_enabled = true;
        out.requests_processing = metric(&text, "llamacpp:requests_processing");
        out.tokens_predicted_total = metric(&text, "llamacpp:tokens_predicted_total");
    }
    Ok(out)
}

/// One GET, its body read up to the bound.
async fn get(http: &reqwest::Client, url: &str) -> Result<(u16, Vec<u8>), reqwest::Error> {
    let mut response = http.get(url).send().await?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_PROBE_BODY_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok((status, body))
}

/// A sample's value from Prometheus text (the first series of the name).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let value = rest.strip_prefix(' ').or_else(|| {
            rest.strip_prefix('{')
                .and_then(|r| r.split_once("} ").map(|(_, v)| v))
        })?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_host_and_port_only() {
        assert_eq!(
            check_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(check_url("127.0.0.1:8080").is_err());
        assert!(check_url("http://h:1/health").is_err());
        let e = check_url("http://admin:s3cret@h:1")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn metrics_by_name() {
        let text = "# HELP x\nllamacpp:requests_processing 2\nllamacpp:tokens_predicted_total{a=\"b\"} 17\n";
        assert_eq!(metric(text, "llamacpp:requests_processing"), Some(2.0));
        assert_eq!(metric(text, "llamacpp:tokens_predicted_total"), Some(17.0));
        assert_eq!(metric(text, "llamacpp:n_decode_total"), None);
    }

    /// A server on loopback whose `/health` answers at once and whose `/slots` never does, as
    /// one whose task loop is stuck: the probe says so after its deadline, and still reads the rest.
    #[tokio::test]
    async fn slots_that_never_answer_are_said_so() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut request = vec![0u8; 4096];
                    let n = socket.read(&mut request).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&request[..n]).into_owned();
                    let body = if head.starts_with("GET /slots") {
                        // Held open, never answered.
                        tokio::time::sleep(PROBE_TIMEOUT * 3).await;
                        return;
                    } else if head.starts_with("GET /health") {
                        "{\"status\":\"ok\"}"
                    } else {
                        ""
                    };
                    let status = if body.is_empty() {
                        "404 Not Found"
                    } else {
                        "200 OK"
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        let probe = probe(&base).await.unwrap();
        assert_eq!(probe.health, Health::Ready);
        assert!(probe.slots_no_answer);
        assert_eq!(probe.slots_processing, None);
        assert!(!probe.metrics_enabled);
    }
}
