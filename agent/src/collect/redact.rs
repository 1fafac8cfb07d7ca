//! Keeps credentials on the node: kernel command-line values known to carry them are redacted before a snapshot leaves the agent.
//!
//! Some nodes boot with secrets on the command line: Omni's `siderolink.api=…?jointoken=…`,
//! `talos.config=` URLs with tokens in their query or user part. A snapshot goes to whoever asks
//! the agent, and into bug-report bundles, so those values never do.

use nodectl_model::KernelArgument;

/// What stands in for a redacted value.
pub const REDACTED: &str = "<redacted>";

/// Arguments whose whole value is a credential.
const SECRET_KEYS: &[&str] = &["talos.config.auth", "siderolink.token"];

/// Words that mark a key or a URL query parameter as a credential.
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "apikey",
    "api_key",
    "auth",
];

fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// The value with credentials in a URL hidden: the user-info part and the values of secret
/// query parameters. `None` when nothing was hidden.
fn redact_url(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    let mut changed = false;
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match authority_and_path.split_once('/') {
        Some((authority, path)) => (authority, Some(path)),
        None => (authority_and_path, None),
    };
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => {
            changed = true;
            format!("{REDACTED}@{host}")
        }
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{authority}");
    if let Some(path) = path {
        out.push('/');
        out.push_str(path);
    }
    if let Some(query) = query {
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) if is_secret_name(name) && !value.is_empty() => {
                    changed = true;
                    format!("{name}={REDACTED}")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&parts.join("&"));
    }
    changed.then_some(out)
}

/// The argument with its credential hidden, or `None` when it carries none.
pub fn redact_argument(arg: &KernelArgument) -> Option<KernelArgument> {
    let value = arg.value.as_deref()?;
    if value.is_empty() {
        return None;
    }
    let whole = SECRET_KEYS.iter().any(|k| arg.key == *k)
        || arg
            .key
            .rsplit('.')
            .next()
            .is_some_and(|last| is_secret_name(last) && !arg.key.starts_with("amdgpu."));
    let redacted = if whole {
        REDACTED.to_owned()
    } else {
        redact_url(value)?
    };
    Some(KernelArgument {
        key: arg.key.clone(),
        value: Some(redacted),
    })
}

/// Redacts the arguments in place; returns whether any was changed.
pub fn redact_arguments(args: &mut [KernelArgument]) -> bool {
    let mut changed = false;
    for arg in args {
        if let Some(redacted) = redact_argument(arg) {
            *arg = redacted;
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn redacted(text: &str) -> Option<String> {
        redact_argument(&KernelArgument::parse(text)).map(|a| a.render())
    }

    #[test]
    fn credentials_in_talos_and_omni_arguments_are_hidden() {
        assert_eq!(
            redacted("siderolink.api=https://omni.example.com:8090/?jointoken=abc123").as_deref(),
            Some("siderolink.api=https://omni.example.com:8090/?jointoken=<redacted>")
        );
        assert_eq!(
            redacted("talos.config=https://user:pw@cfg.example/m?uuid=1&token=s3cret").as_deref(),
            Some("talos.config=https://<redacted>@cfg.example/m?uuid=1&token=<redacted>")
        );
        assert_eq!(
            redacted("talos.config.auth=Bearer xyz").as_deref(),
            Some("talos.config.auth=<redacted>")
        );
        assert_eq!(
            redacted("some.api_key=k").as_deref(),
            Some("some.api_key=<redacted>")
        );
    }

    #[test]
    fn ordinary_arguments_are_kept() {
        for text in [
            "amdgpu.cwsr_enable=0",
            "talos.config=https://cfg.example/machine?uuid=1",
            "quiet",
            "console=tty0",
            "talos.platform=metal",
            "ttm.pages_limit=25165824",
        ] {
            assert_eq!(redacted(text), None, "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn redaction_never_panics_and_never_keeps_a_token(key in "[a-z._]{1,20}", value in "\\PC{0,80}") {
            let arg = KernelArgument { key, value: Some(value) };
            if let Some(r) = redact_argument(&arg) {
                proptest::prop_assert!(r.value.as_deref().is_some_and(|v| v.contains(REDACTED)));
            }
        }
    }
}
