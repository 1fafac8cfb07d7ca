//! Keeps credentials on the node: every value the agent reads that may carry one is redacted here, where it is read, before it reaches a snapshot, a reply, a metric or a bundle.
//!
//! Two sources carry credentials. The kernel command line: Omni's `siderolink.api=…?jointoken=…`,
//! `talos.config=` URLs with tokens in their query or user part. And the inference processes'
//! arguments and allowlisted environment: `--api-key sk-…`, `--hf-token hf_…`,
//! `LLAMA_ARG_API_KEY`, pre-signed model URLs (`LLAMA_ARG_MODEL_URL=…?X-Amz-Signature=…`).
//! Whoever can reach the agent gets what it serves, so these values are replaced on the node by
//! a placeholder that names what was removed (`<redacted:api-key>`). The flag, variable or key
//! itself stays: a diagnosis still sees that the server takes a key.
//!
//! What is removed:
//! - the value of a flag, variable or kernel argument whose name holds, as a word, key, token,
//!   secret, password/passwd, auth or credential (`--api-key`, `LLAMA_ARG_HF_TOKEN`,
//!   `talos.config.auth`; not `--keep`, `--cache-type-k` nor `--image-max-tokens`), unless the
//!   name says the value is a path or a number ([`secret_name`]);
//! - a URL's user part, and its query and fragment values: every one of them in a process's
//!   arguments and variables (a pre-signed URL signs with any parameter name), those with
//!   secret names on the kernel command line (where `talos.config=…?uuid=…` is worth keeping);
//! - text shaped like a credential, wherever it stands ([`redact_text`]): Hugging Face
//!   (`hf_…`), GitHub (`ghp_…`, `github_pat_…`) and OpenAI-style (`sk-…`) tokens, AWS access
//!   key ids (`AKIA…`), JWTs (`eyJ….….…`) and bearer tokens.

pub mod bundle;

use std::borrow::Cow;

use nodectl_model::KernelArgument;

/// What a placeholder says was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--api-key`, `LLAMA_ARG_API_KEY`, an `sk-…` key.
    ApiKey,
    /// `--hf-token`, `LLAMA_ARG_HF_TOKEN`, an `hf_…` token.
    HfToken,
    /// `ghp_…`, `gho_…`, `ghu_…`, `ghs_…`, `ghr_…`, `github_pat_…`.
    GithubToken,
    /// `AKIA…` (long-term) or `ASIA…` (temporary) access key id.
    AwsKeyId,
    /// `eyJ….….…`
    Jwt,
    /// What follows `Bearer `.
    BearerToken,
    /// A name holding `key` (`--encryption-key`, `rd.luks.key`).
    Key,
    /// A name holding `token` (`siderolink.token`, `jointoken`).
    Token,
    Secret,
    /// A name holding `password` or `passwd`.
    Password,
    /// A name holding `auth` (`talos.config.auth`).
    Auth,
    Credential,
    /// `user:password@` of a URL.
    UrlUserinfo,
    /// A value of a URL's query or fragment.
    UrlQuery,
    /// A kernel argument that identifies the machine or its storage and network: `root=`,
    /// `cryptdevice=`, `luks.*`, `rd.luks.*`, `ip=`, `nfsroot=`, `resume=`, `systemd.machine_id=`.
    HostIdentity,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ApiKey => "api-key",
            Kind::HfToken => "hf-token",
            Kind::GithubToken => "github-token",
            Kind::AwsKeyId => "aws-key-id",
            Kind::Jwt => "jwt",
            Kind::BearerToken => "bearer-token",
            Kind::Key => "key",
            Kind::Token => "token",
            Kind::Secret => "secret",
            Kind::Password => "password",
            Kind::Auth => "auth",
            Kind::Credential => "credential",
            Kind::UrlUserinfo => "url-userinfo",
            Kind::UrlQuery => "url-query",
            Kind::HostIdentity => "host-identity",
        }
    }

    /// `<redacted:api-key>`.
    pub fn placeholder(self) -> String {
        format!("{PLACEHOLDER_START}{}>", self.as_str())
    }
}

/// How every placeholder begins.
pub const PLACEHOLDER_START: &str = "<redacted:";

/// Last words that make a value a path or a number, never the credential itself.
/// `--api-key-file` and `--ssl-key-file` name the file the key is in: the agent never reads it,
/// and where the key comes from is worth knowing when a server refuses its clients.
/// `--print-token-count N` and `--image-max-tokens N` count tokens of text.
const NOT_SECRET_LAST_WORDS: [&str; 11] = [
    "file", "fname", "path", "dir", "count", "size", "limit", "len", "length", "min", "max",
];

/// Names with a secret word that carry no secret, as their words joined by `-`:
/// llama-server's `--cors-credentials` is a switch (its variable is `true`/`false`).
const NOT_SECRET_NAMES: [&str; 1] = ["cors-credentials"];

/// Short flags that take a secret: llama.cpp's `-hft` is `--hf-token`.
const SECRET_SHORT_FLAGS: [(&str, Kind); 1] = [("-hft", Kind::HfToken)];

/// The lower-cased words of a name: `--api-key` → `api`, `key`; `LLAMA_ARG_HF_TOKEN` →
/// `llama`, `arg`, `hf`, `token`; `talos.config.auth` → `talos`, `config`, `auth`.
fn words(name: &str) -> Vec<String> {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// What one word of a name says its value is. Whole words or their ends, so that `jointoken`,
/// `apikey` and `dbpassword` count and `tokens`, `keep`, `kv` and `k` do not.
fn word_kind(word: &str) -> Option<Kind> {
    if word.contains("passw") {
        Some(Kind::Password)
    } else if word.contains("secret") {
        Some(Kind::Secret)
    } else if word.contains("credential") {
        Some(Kind::Credential)
    } else if word.ends_with("token") {
        Some(Kind::Token)
    } else if word.starts_with("auth") || word.ends_with("auth") {
        Some(Kind::Auth)
    } else if word.ends_with("key") || word.ends_with("keys") {
        Some(Kind::Key)
    } else {
        None
    }
}

/// Whether a flag's, variable's, key's or query parameter's value is a credential by its name,
/// and what kind. `None` for names without a secret word, and for those that name a path or a
/// number (`--api-key-file`, `--print-token-count`) or a switch (`--no-…`, `--cors-credentials`).
pub fn secret_name(name: &str) -> Option<Kind> {
    let words = words(name);
    let last = words.last()?;
    if NOT_SECRET_LAST_WORDS.contains(&last.as_str()) {
        return None;
    }
    // llama.cpp's variables are its flags' names: `LLAMA_ARG_CORS_CREDENTIALS`.
    let significant = match words.as_slice() {
        [llama, arg, rest @ ..] if llama == "llama" && arg == "arg" => rest,
        all => all,
    };
    // `--no-…` turns a switch off: llama.cpp's negations take no value.
    if significant.first().is_some_and(|w| w == "no")
        || NOT_SECRET_NAMES.contains(&significant.join("-").as_str())
    {
        return None;
    }
    let kinds: Vec<Kind> = significant.iter().filter_map(|w| word_kind(w)).collect();
    let has_word = |word: &str| significant.iter().any(|w| w == word);
    if kinds.contains(&Kind::Key) && (has_word("api") || has_word("apikey")) {
        return Some(Kind::ApiKey);
    }
    if kinds.contains(&Kind::Token) && (has_word("hf") || has_word("hftoken")) {
        return Some(Kind::HfToken);
    }
    [
        Kind::Password,
        Kind::Secret,
        Kind::Credential,
        Kind::Token,
        Kind::Auth,
        Kind::Key,
    ]
    .into_iter()
    .find(|k| kinds.contains(k))
}

/// How much of a URL's query and fragment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query {
    /// Every value: a pre-signed URL's signature and credential can hide under any name.
    AllValues,
    /// The values of parameters with a secret name only.
    SecretNames,
}

/// Characters of a URL scheme (`https`, `git+ssh`, `s3`).
fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')
}

/// Where a URL written in text stops: white space and the quotes that delimit it. Not `<>`:
/// a placeholder already put in the URL (`X-Amz-Credential=<redacted:aws-key-id>%2F…`) holds them.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`')
}

/// `name=value&…` with values replaced as `query` says.
fn redact_pairs(pairs: &str, query: Query, out: &mut String) {
    for (i, pair) in pairs.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            // `sig=…`; not `c2lnbmF0dXJl==`, a bare base64 value and its padding.
            Some((name, value))
                if !value.bytes().all(|b| b == b'=')
                    && (query == Query::AllValues || secret_name(name).is_some()) =>
            {
                out.push_str(name);
                out.push('=');
                out.push_str(&Kind::UrlQuery.placeholder());
            }
            // A bare value (`?AbC123`, `#c2lnbmF0dXJl=` with its base64 padding) is as
            // likely a signature as anything else.
            _ if !pair.is_empty() && query == Query::AllValues => {
                out.push_str(&Kind::UrlQuery.placeholder());
            }
            _ => out.push_str(pair),
        }
    }
}

/// One URL (from its scheme to where it stops) with its user part and query values replaced.
fn redact_url(scheme: &str, rest: &str, query: Query, out: &mut String) {
    out.push_str(scheme);
    out.push_str("://");
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => {
            out.push_str(&Kind::UrlUserinfo.placeholder());
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match after.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (after, None),
    };
    match before_fragment.split_once('?') {
        Some((path, pairs)) => {
            out.push_str(path);
            out.push('?');
            redact_pairs(pairs, query, out);
        }
        None => out.push_str(before_fragment),
    }
    // OAuth's implicit flow hands `#access_token=…` in the fragment.
    if let Some(fragment) = fragment {
        out.push('#');
        redact_pairs(fragment, query, out);
    }
}

/// Every URL in `text` (`scheme://…` up to white space or a quote) with its credentials removed.
fn redact_urls(text: &str, query: Query) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let separator = search + found;
        let scheme_start = text[..separator]
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_scheme_char(*c))
            .last()
            .map_or(separator, |(i, _)| i)
            .max(copied);
        let rest_start = separator + 3;
        if scheme_start == separator {
            // No scheme (`://x`): not a URL, but one may follow (`://x,https://u:p@h`).
            search = rest_start;
            continue;
        }
        let end = text[rest_start..]
            .find(ends_url)
            .map_or(text.len(), |i| rest_start + i);
        out.push_str(&text[copied..scheme_start]);
        redact_url(
            &text[scheme_start..separator],
            &text[rest_start..end],
            query,
            &mut out,
        );
        copied = end;
        search = end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    if out == text {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(out)
    }
}

/// Bytes that continue a word: a credential shape only starts after something else, so that
/// `disk-…` is not an `sk-…` key nor `xhf_…` a Hugging Face token.
fn continues_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Characters of an RFC 6750 bearer token.
fn is_bearer_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// How many bytes from `from` on satisfy `ok`.
fn run(bytes: &[u8], from: usize, ok: impl Fn(u8) -> bool) -> usize {
    bytes
        .get(from..)
        .map_or(0, |rest| rest.iter().take_while(|b| ok(**b)).count())
}

/// A credential found at a position: `keep` bytes stay (`Bearer `), then `len - keep` go.
struct Shape {
    kind: Kind,
    keep: usize,
    len: usize,
}

/// The shortest bodies counted as credentials: real tokens are longer (Hugging Face 34, GitHub
/// 36, OpenAI 48 and more), and shorter runs are often names (`sk-llama-3-8b-instruct`).
const MIN_TOKEN_BODY: usize = 30;
const MIN_SK_BODY: usize = 32;
const MIN_GITHUB_PAT_BODY: usize = 40;
/// An AWS access key id is its prefix and exactly 16 upper-case letters or digits.
const AWS_KEY_ID_BODY: usize = 16;
/// A JWT's header and payload are base64url JSON (`{"alg":…}` is at least this long).
const MIN_JWT_PART: usize = 10;
const MIN_BEARER_TOKEN: usize = 8;

/// The credential that starts at `i`, if one does.
fn shape_at(bytes: &[u8], i: usize) -> Option<Shape> {
    let rest = &bytes[i..];
    let body = |prefix: &[u8], min: usize, ok: fn(u8) -> bool, kind: Kind| {
        if !rest.starts_with(prefix) {
            return None;
        }
        let n = run(bytes, i + prefix.len(), ok);
        (n >= min).then_some(Shape {
            kind,
            keep: 0,
            len: prefix.len() + n,
        })
    };
    let alnum: fn(u8) -> bool = |b| b.is_ascii_alphanumeric();
    let alnum_underscore: fn(u8) -> bool = |b| b.is_ascii_alphanumeric() || b == b'_';
    let found = body(b"hf_", MIN_TOKEN_BODY, alnum, Kind::HfToken)
        .or_else(|| {
            body(
                b"github_pat_",
                MIN_GITHUB_PAT_BODY,
                alnum_underscore,
                Kind::GithubToken,
            )
        })
        .or_else(|| {
            [b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"]
                .into_iter()
                .find_map(|p| body(p, MIN_TOKEN_BODY, alnum, Kind::GithubToken))
        })
        .or_else(|| body(b"sk-", MIN_SK_BODY, is_base64url, Kind::ApiKey));
    if found.is_some() {
        return found;
    }
    if rest.starts_with(b"AKIA") || rest.starts_with(b"ASIA") {
        let n = run(bytes, i + 4, |b| {
            b.is_ascii_uppercase() || b.is_ascii_digit()
        });
        let next = bytes.get(i + 4 + n).copied();
        if n == AWS_KEY_ID_BODY && !next.is_some_and(|b| b.is_ascii_alphanumeric()) {
            return Some(Shape {
                kind: Kind::AwsKeyId,
                keep: 0,
                len: 4 + n,
            });
        }
    }
    if rest.starts_with(b"eyJ") {
        let header = 3 + run(bytes, i + 3, is_base64url);
        if header >= MIN_JWT_PART && bytes.get(i + header) == Some(&b'.') {
            let payload = run(bytes, i + header + 1, is_base64url);
            if payload >= MIN_JWT_PART && bytes.get(i + header + 1 + payload) == Some(&b'.') {
                // The signature is empty for `alg: none`.
                let signature = run(bytes, i + header + payload + 2, is_base64url);
                return Some(Shape {
                    kind: Kind::Jwt,
                    keep: 0,
                    len: header + payload + 2 + signature,
                });
            }
        }
    }
    if rest.len() > 6 && rest[..6].eq_ignore_ascii_case(b"bearer") {
        let spaces = run(bytes, i + 6, |b| b == b' ');
        let token = run(bytes, i + 6 + spaces, is_bearer_char);
        if spaces > 0 && token >= MIN_BEARER_TOKEN {
            return Some(Shape {
                kind: Kind::BearerToken,
                keep: 6 + spaces,
                len: 6 + spaces + token,
            });
        }
    }
    None
}

/// `text` with every credential-shaped run replaced.
fn redact_shapes(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Every shape starts with an ASCII byte, so `i` is then a character boundary, and so
        // is its end (the byte after an ASCII run).
        if (i == 0 || !continues_word(bytes[i - 1]))
            && let Some(shape) = shape_at(bytes, i)
        {
            out.push_str(&text[copied..i + shape.keep]);
            out.push_str(&shape.kind.placeholder());
            i += shape.len;
            copied = i;
        } else {
            i += 1;
        }
    }
    if copied == 0 {
        Cow::Borrowed(text)
    } else {
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }
}

/// Free text (an argument, a variable's value) with every URL's user part and query values,
/// and every credential-shaped run, replaced.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    // Shapes first: a URL stops at white space, so `?a=Bearer TOKEN` would leave TOKEN outside
    // it, and its query's placeholder would hide the `Bearer` that marks it.
    match redact_shapes(text) {
        Cow::Borrowed(text) => redact_urls(text, Query::AllValues),
        Cow::Owned(shapes) => Cow::Owned(redact_urls(&shapes, Query::AllValues).into_owned()),
    }
}

/// An argument that is a flag (`-x`, `--name`, `--name=value`): its name, with its dashes.
fn flag_name(arg: &str) -> Option<&str> {
    let name = arg.split_once('=').map_or(arg, |(name, _)| name);
    let bare = name.trim_start_matches('-');
    (name.len() > bare.len()
        && !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    .then_some(name)
}

/// What a flag given alone takes as its value, when that is a credential.
fn secret_flag(name: &str) -> Option<Kind> {
    SECRET_SHORT_FLAGS
        .iter()
        .find(|(flag, _)| *flag == name)
        .map(|(_, kind)| *kind)
        .or_else(|| {
            if name.starts_with("--") {
                secret_name(name)
            } else {
                // A single-dash flag (`-m`, `-ngl`) is an abbreviation: its letters are no words.
                None
            }
        })
}

/// Whether the argument after a secret flag is another flag rather than the secret: a long
/// flag (`--port`, `--model=…`: lower-case words), or a short one such as `-m` or `-ngl`.
/// A key that reads so would be a flag to the program too; a random one does not.
fn looks_like_flag(arg: &str) -> bool {
    if let Some(long) = arg.strip_prefix("--") {
        let name = long.split_once('=').map_or(long, |(name, _)| name);
        return name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    }
    arg.strip_prefix('-').is_some_and(|short| {
        (1..=8).contains(&short.len())
            && short.starts_with(|c: char| c.is_ascii_alphabetic())
            && short
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// The name of `NAME=value` written as an argument (a wrapper's settings, `env HF_TOKEN=…`),
/// when NAME is an identifier: `tokenizer.ggml.add_bos_token=bool:false` is a GGUF key, not one.
fn assignment_name(arg: &str) -> Option<&str> {
    let (name, _) = arg.split_once('=')?;
    (name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    .then_some(name)
}

/// A process's arguments with every credential replaced: the value after a secret flag
/// (`--api-key KEY`, `--api-key=KEY`, `-hft TOKEN`), the value of a secret `NAME=value`, and
/// URLs and credential-shaped text anywhere. Flags stay, so `--api-key` still shows.
pub fn redact_args(args: &mut [String]) {
    let mut value_of: Option<Kind> = None;
    for arg in args.iter_mut() {
        if let Some(kind) = value_of.take()
            && !arg.is_empty()
            && !looks_like_flag(arg)
        {
            *arg = kind.placeholder();
            continue;
        }
        let name = flag_name(arg);
        let assigned = match name {
            Some(flag) => secret_flag(flag).map(|kind| (flag.len(), kind)),
            None => assignment_name(arg).and_then(|name| Some((name.len(), secret_name(name)?))),
        };
        if let Some((name_len, kind)) = assigned {
            match arg.as_bytes().get(name_len) {
                Some(b'=') => {
                    if arg.len() > name_len + 1 {
                        arg.truncate(name_len + 1);
                        arg.push_str(&kind.placeholder());
                    }
                    continue;
                }
                // The flag alone: its value is the next argument.
                _ => value_of = Some(kind),
            }
        }
        if let Cow::Owned(redacted) = redact_text(arg) {
            *arg = redacted;
        }
    }
}

/// An allowlisted variable's value: all of it when the name holds a secret word
/// (`LLAMA_ARG_API_KEY`, `LLAMA_ARG_HF_TOKEN`), else with URLs and credential-shaped text
/// replaced (`LLAMA_ARG_MODEL_URL=…?X-Amz-Signature=…`).
pub fn redact_env_value(name: &str, value: &str) -> String {
    match secret_name(name) {
        Some(kind) if !value.is_empty() => kind.placeholder(),
        _ => redact_text(value).into_owned(),
    }
}

/// A kernel command-line argument with its credential hidden, or `None` when it carries none:
/// the whole value of a key whose last part is a secret name (`talos.config.auth`,
/// `siderolink.token`; never `amdgpu.*`, whose parameters are settings), else a URL value's
/// user part and secret query values (`siderolink.api=…?jointoken=…`), and credential-shaped
/// text anywhere.
pub fn redact_argument(arg: &KernelArgument) -> Option<KernelArgument> {
    if arg.value.as_deref().is_some_and(|v| !v.is_empty()) && host_identity_key(&arg.key) {
        return Some(KernelArgument {
            key: arg.key.clone(),
            value: Some(Kind::HostIdentity.placeholder()),
        });
    }
    let Some(value) = arg.value.as_deref() else {
        // A bare argument is a name, but one shaped like a credential is one.
        let key = redact_shapes(&arg.key);
        return matches!(key, Cow::Owned(_)).then(|| KernelArgument {
            key: key.into_owned(),
            value: None,
        });
    };
    if value.is_empty() {
        return None;
    }
    let whole = (!arg.key.starts_with("amdgpu."))
        .then(|| arg.key.rsplit('.').next().and_then(secret_name))
        .flatten();
    let redacted = match whole {
        Some(kind) => kind.placeholder(),
        None => {
            let shapes = redact_shapes(value);
            redact_urls(&shapes, Query::SecretNames).into_owned()
        }
    };
    (redacted != value).then(|| KernelArgument {
        key: arg.key.clone(),
        value: Some(redacted),
    })
}

/// Kernel arguments whose values identify the machine, its disks or its network (amd-debug-tools
/// and `nvidia-bug-report.sh --safe-mode` leave them out too): nothing amdgpu depends on.
const HOST_IDENTITY_KEYS: [&str; 7] = [
    "root",
    "cryptdevice",
    "ip",
    "nfsroot",
    "resume",
    "systemd.machine_id",
    "rd.luks.uuid",
];

/// Prefixes of kernel argument keys whose values identify the machine's encrypted disks.
const HOST_IDENTITY_PREFIXES: [&str; 2] = ["luks.", "rd.luks."];

fn host_identity_key(key: &str) -> bool {
    HOST_IDENTITY_KEYS.contains(&key) || HOST_IDENTITY_PREFIXES.iter().any(|p| key.starts_with(p))
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

    fn args(line: &str) -> Vec<String> {
        let mut args: Vec<String> = line.split(' ').map(str::to_owned).collect();
        redact_args(&mut args);
        args
    }

    #[test]
    fn credentials_in_talos_and_omni_arguments_are_hidden() {
        assert_eq!(
            redacted("siderolink.api=https://omni.example.com:8090/?jointoken=abc123").as_deref(),
            Some("siderolink.api=https://omni.example.com:8090/?jointoken=<redacted:url-query>")
        );
        assert_eq!(
            redacted("talos.config=https://user:pw@cfg.example/m?uuid=1&token=s3cret").as_deref(),
            Some(
                "talos.config=https://<redacted:url-userinfo>@cfg.example/m?uuid=1&token=<redacted:url-query>"
            )
        );
        assert_eq!(
            redacted("talos.config.auth=Bearer xyz").as_deref(),
            Some("talos.config.auth=<redacted:auth>")
        );
        assert_eq!(
            redacted("siderolink.token=abc").as_deref(),
            Some("siderolink.token=<redacted:token>")
        );
        assert_eq!(
            redacted("some.api_key=k").as_deref(),
            Some("some.api_key=<redacted:api-key>")
        );
        assert_eq!(
            redacted("x.hf=hf_abcdefghijklmnopqrstuvwxyzABCDEFGH").as_deref(),
            Some("x.hf=<redacted:hf-token>")
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
            "talos.config=",
        ] {
            assert_eq!(redacted(text), None, "{text}");
        }
    }

    #[test]
    fn arguments_naming_the_machine_disks_or_network_are_hidden_whole() {
        for text in [
            "root=/dev/disk/by-partlabel/disk-0123456789abcdefghijklmnopqrstuvwxyz",
            "ip=10.0.0.5::10.0.0.1:255.255.255.0:node1:eth0:off",
            "cryptdevice=UUID=1c0e7b5e-0000-4000-8000-000000000001:root",
            "rd.luks.uuid=1c0e7b5e-0000-4000-8000-000000000001",
            "luks.name=1c0e7b5e=root",
            "resume=/dev/nvme0n1p3",
            "nfsroot=10.0.0.1:/srv/root",
            "systemd.machine_id=0123456789abcdef0123456789abcdef",
        ] {
            let key = text.split_once('=').map_or(text, |(k, _)| k);
            assert_eq!(
                redacted(text),
                Some(format!("{key}=<redacted:host-identity>")),
                "{text}"
            );
        }
    }

    #[test]
    fn secret_flags_keep_the_flag_and_lose_the_value() {
        assert_eq!(
            args(
                "/app/llama-server -m /models/q.gguf --api-key sk-x1 --hf-token hf_short -hft t0k --port 8080"
            ),
            [
                "/app/llama-server",
                "-m",
                "/models/q.gguf",
                "--api-key",
                "<redacted:api-key>",
                "--hf-token",
                "<redacted:hf-token>",
                "-hft",
                "<redacted:hf-token>",
                "--port",
                "8080"
            ]
        );
        assert_eq!(
            args(
                "--api-key=k1,k2 --db-password=pw --client-secret s/x+y== --auth-token=a --api-key="
            ),
            [
                "--api-key=<redacted:api-key>",
                "--db-password=<redacted:password>",
                "--client-secret",
                "<redacted:secret>",
                "--auth-token=<redacted:token>",
                "--api-key="
            ]
        );
        // A secret flag followed by another flag: no value to hide, and the flag stays.
        assert_eq!(
            args("--api-key --model /m.gguf -ngl 99"),
            ["--api-key", "--model", "/m.gguf", "-ngl", "99"]
        );
        assert_eq!(
            args("HF_TOKEN=abc API_KEY=def GGML_X=1"),
            [
                "HF_TOKEN=<redacted:hf-token>",
                "API_KEY=<redacted:api-key>",
                "GGML_X=1"
            ]
        );
    }

    #[test]
    fn flags_that_only_look_secret_are_kept() {
        for line in [
            "--n-gpu-layers 99 --keep 4 --no-kv-offload --cache-type-k q8_0 --cache-type-v q8_0",
            "--rope-scaling yarn --rope-freq-base 1e6 --kv-unified --top-k 40 --override-kv tokenizer.ggml.add_bos_token=bool:false",
            "--api-key-file /run/secrets/keys --ssl-key-file /tls/key.pem --ssl-cert-file /tls/cert.pem",
            "--print-token-count 100 --image-max-tokens 1024 --mtmd-batch-max-tokens 512",
            "--cors-credentials --no-cors-credentials --chat-template-kwargs {\"a\":1} -ptc 5",
            "-hf unsloth/Qwen3-GGUF -hff q.gguf --hf-repo x/y -mu https://example.com/m.gguf",
            "/usr/bin/ollama runner --model /m/sha256-abc --ctx-size 8192 --port 40000",
        ] {
            assert_eq!(args(line).join(" "), line);
        }
        // A switch with a secret word does not swallow the flag after it.
        assert_eq!(
            args("--cors-credentials --port 8080"),
            ["--cors-credentials", "--port", "8080"]
        );
    }

    #[test]
    fn url_credentials_go_and_the_rest_of_the_url_stays() {
        let signed = "https://bucket.s3.amazonaws.com/m.gguf?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=abc123&download";
        assert_eq!(
            redact_env_value("LLAMA_ARG_MODEL_URL", signed),
            "https://bucket.s3.amazonaws.com/m.gguf?X-Amz-Algorithm=<redacted:url-query>&X-Amz-Credential=<redacted:url-query>&X-Amz-Signature=<redacted:url-query>&<redacted:url-query>"
        );
        assert_eq!(
            args("--model-url=https://me:pw@host.example/a/b.gguf#access_token=xyz"),
            [
                "--model-url=https://<redacted:url-userinfo>@host.example/a/b.gguf#access_token=<redacted:url-query>"
            ]
        );
        assert_eq!(
            redact_text("://x,https://u:p@h"),
            "://x,https://<redacted:url-userinfo>@h"
        );
        assert_eq!(
            redact_text("fetch from \"https://u@h/x?k=v\" then git+ssh://git@host/repo"),
            "fetch from \"https://<redacted:url-userinfo>@h/x?k=<redacted:url-query>\" then git+ssh://<redacted:url-userinfo>@host/repo"
        );
        for plain in [
            "https://huggingface.co/unsloth/Qwen3-GGUF/resolve/main/q.gguf",
            "http://0.0.0.0:8080/health",
            "a://",
            "://x",
            "://://",
            "nothing here",
        ] {
            assert_eq!(redact_text(plain), plain);
        }
    }

    #[test]
    fn secret_variables_lose_their_values() {
        assert_eq!(
            redact_env_value("LLAMA_ARG_API_KEY", "sk-abc"),
            "<redacted:api-key>"
        );
        assert_eq!(
            redact_env_value("LLAMA_ARG_HF_TOKEN", "hf_x"),
            "<redacted:hf-token>"
        );
        assert_eq!(redact_env_value("LLAMA_API_KEY", "k"), "<redacted:api-key>");
        for (name, value) in [
            ("HSA_ENABLE_SDMA", "0"),
            ("LLAMA_ARG_API_KEY_FILE", "/run/keys"),
            ("LLAMA_ARG_SSL_KEY_FILE", "/tls/key.pem"),
            ("LLAMA_ARG_CORS_CREDENTIALS", "true"),
            ("LLAMA_ARG_IMAGE_MAX_TOKENS", "1024"),
            ("LLAMA_ARG_N_GPU_LAYERS", "999"),
            ("LLAMA_ARG_KV_UNIFIED", "1"),
            ("LLAMA_ARG_CACHE_TYPE_K", "q8_0"),
            ("LLAMA_ARG_API_KEY", ""),
        ] {
            assert_eq!(redact_env_value(name, value), value, "{name}");
        }
    }

    #[test]
    fn credential_shapes_anywhere() {
        let hf = "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH";
        let gh = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
        let pat = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789";
        let sk = "sk-proj-0123456789abcdefghijklmnopqrstuvwxyz";
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(
            redact_text(&format!("token={hf},{gh} ({pat}) '{sk}'")),
            "token=<redacted:hf-token>,<redacted:github-token> (<redacted:github-token>) '<redacted:api-key>'"
        );
        assert_eq!(
            redact_text(&format!("Authorization: Bearer {jwt}")),
            "Authorization: Bearer <redacted:bearer-token>"
        );
        assert_eq!(
            redact_text(&format!("jwt:{jwt}.gguf")),
            "jwt:<redacted:jwt>.gguf"
        );
        assert_eq!(
            redact_text("id=AKIAIOSFODNN7EXAMPLE/x ASIAIOSFODNN7EXAMPLE"),
            "id=<redacted:aws-key-id>/x <redacted:aws-key-id>"
        );
        for kept in [
            // Too short, glued to a word, or the wrong length for an AWS key id.
            "hf_short sk-llama-3-8b-instruct-q4 /disk-0123456789abcdefghijklmnopqrstuvwxyz",
            "xhf_abcdefghijklmnopqrstuvwxyzABCDEFGH AKIAIOSFODNN7EXAMPLEX AKIAIOSFODNN7EXAMPL",
            "eyJhbGciOiJIUzI1NiJ9 bearer of news Bearer short",
            "é日本語 unicode around nothing",
        ] {
            assert_eq!(redact_text(kept), kept);
        }
    }

    #[test]
    fn redacting_twice_changes_nothing_more() {
        let line = "--api-key sk-0123456789abcdefghijklmnopqrstuvwxyzAB --x=https://u:p@h/?a=b Bearer abcdefghij";
        let once = args(line);
        let mut twice = once.clone();
        redact_args(&mut twice);
        assert_eq!(once, twice);
        for arg in &once {
            assert_eq!(redact_text(arg), arg.as_str());
        }
    }

    use proptest::prelude::*;

    /// A credential of every listed shape, and the part of it that must not survive.
    fn credential() -> impl Strategy<Value = (String, String)> {
        let whole = |s: String| (s.clone(), s);
        prop_oneof![
            "hf_[A-Za-z0-9]{30,40}".prop_map(whole),
            "gh[pousr]_[A-Za-z0-9]{30,40}".prop_map(whole),
            "github_pat_[A-Za-z0-9_]{40,90}".prop_map(whole),
            "sk-[A-Za-z0-9_-]{32,60}".prop_map(whole),
            "(AKIA|ASIA)[A-Z0-9]{16}".prop_map(whole),
            "eyJ[A-Za-z0-9_-]{7,40}\\.[A-Za-z0-9_-]{10,80}\\.[A-Za-z0-9_-]{0,60}".prop_map(whole),
            ("(Bearer|bearer|BEARER) {1,2}", "[A-Za-z0-9._~+/=-]{8,60}")
                .prop_map(|(b, t)| (format!("{b}{t}"), t)),
        ]
    }

    /// A secret of no particular shape, as a flag's or a variable's value would be: base64 or
    /// base64url with its padding, in the characters a URL's user part and query value may
    /// hold unencoded (a `/` would end the user part, a `&` the value, for the program too).
    /// Not one that reads as a flag (`--port`, `-ngl`): the program would take it as one.
    fn any_secret() -> impl Strategy<Value = String> {
        "[A-Za-z0-9+._~-]{12,40}={0,2}".prop_filter("reads as a flag", |s| {
            let long_flag = s.strip_prefix("--").is_some_and(|rest| {
                rest.starts_with(|c: char| c.is_ascii_lowercase())
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
            !long_flag
        })
    }

    /// Text that cannot hold a credential: no `_`, `-`, `@`, `?`, `#` (so no token prefix, no
    /// flag, no URL credential), and none of the prefixes that need only letters.
    fn plain_text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9./,:=+ ]{0,30}".prop_filter("holds a credential prefix", |t| {
            !t.to_ascii_lowercase().contains("bearer")
                && !t.contains("AKIA")
                && !t.contains("ASIA")
                && !t.contains("eyJ")
        })
    }

    /// Characters a credential may stand after.
    fn separator() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(vec![" ", "=", ":", ",", "/", ";", "\"", "'", "(", "\t"])
    }

    /// Flags of llama-server and ollama that carry no secret, whatever words they hold.
    const PLAIN_FLAGS: [&str; 14] = [
        "-m",
        "--model",
        "--n-gpu-layers",
        "--keep",
        "--cache-type-k",
        "--rope-freq-base",
        "--kv-unified",
        "--api-key-file",
        "--ssl-key-file",
        "--print-token-count",
        "--image-max-tokens",
        "--host",
        "-hf",
        "--override-kv",
    ];
    const SECRET_FLAGS: [&str; 5] = ["--api-key", "--hf-token", "-hft", "--password", "--auth"];
    const PLAIN_VARIABLES: [&str; 4] = [
        "HSA_ENABLE_SDMA",
        "LLAMA_ARG_MODEL_URL",
        "LLAMA_ARG_API_KEY_FILE",
        "GGML_VK_VISIBLE_DEVICES",
    ];
    const PLAIN_KERNEL_KEYS: [&str; 8] = [
        "console",
        "init",
        "amdgpu.cwsr_enable",
        "amdgpu.gttsize",
        "ttm.pages_limit",
        "talos.platform",
        "talos.config",
        "siderolink.api",
    ];
    const SECRET_VARIABLES: [&str; 3] = [
        "LLAMA_ARG_API_KEY",
        "LLAMA_ARG_HF_TOKEN",
        "LLAMA_ARG_SECRET",
    ];

    /// Every place a process or the command line names a secret, each holding `secret`: after a
    /// secret flag in both forms, in a secret variable, in a URL's user part and query; the
    /// redacted text of all of them, one per line.
    fn named_fields(secret: &str, flag: &str, variable: &str) -> String {
        let mut args = vec![
            "/app/llama-server".to_owned(),
            format!("{flag}={secret}"),
            flag.to_owned(),
            secret.to_owned(),
            format!("--model-url=https://h.example/m.gguf?X-Amz-Signature={secret}&b={secret}"),
            format!("https://{secret}@h.example/"),
            format!("NODE_AUTH_TOKEN={secret}"),
        ];
        redact_args(&mut args);
        let mut out = args;
        out.push(redact_env_value(variable, secret));
        out.push(redact_env_value(
            "LLAMA_ARG_MODEL_URL",
            &format!("https://u:{secret}@h.example/m?sig={secret}#{secret}"),
        ));
        for kernel in [
            format!("talos.config=https://u:{secret}@h.example/?token={secret}&x=1"),
            format!("siderolink.token={secret}"),
        ] {
            let arg = KernelArgument::parse(&kernel);
            out.push(redact_argument(&arg).unwrap_or(arg).render());
        }
        out.join("\n")
    }

    /// Every place a value may stand, named secret or not, each holding `value`: an argument of
    /// its own, a plain flag's value in both forms, a plain variable, a kernel argument, and
    /// the named places; the redacted text of all of them.
    fn every_field(value: &str, flag: &str, variable: &str) -> String {
        let mut args = vec![
            "/app/llama-server".to_owned(),
            value.to_owned(),
            format!("{flag}={value}"),
            flag.to_owned(),
            value.to_owned(),
        ];
        redact_args(&mut args);
        let mut out = args;
        out.push(redact_env_value(variable, value));
        let arg = KernelArgument::parse(&format!("x.y={value}"));
        out.push(redact_argument(&arg).unwrap_or(arg).render());
        out.push(named_fields(value, "--api-key", "LLAMA_ARG_API_KEY"));
        out.join("\n")
    }

    proptest! {
        #[test]
        fn a_planted_credential_never_survives_in_any_field(
            (credential, secret) in credential(),
            before in plain_text(),
            after in plain_text(),
            open in separator(),
            close in separator(),
            flag in proptest::sample::select(PLAIN_FLAGS.to_vec()),
            variable in proptest::sample::select(PLAIN_VARIABLES.to_vec()),
        ) {
            let value = format!("{before}{open}{credential}{close}{after}");
            let out = every_field(&value, flag, variable);
            prop_assert!(!out.contains(&secret), "{secret} survived:\n{out}");
        }

        #[test]
        fn a_secret_named_value_never_survives(
            secret in any_secret(),
            flag in proptest::sample::select(SECRET_FLAGS.to_vec()),
            variable in proptest::sample::select(SECRET_VARIABLES.to_vec()),
        ) {
            let out = named_fields(&secret, flag, variable);
            prop_assert!(!out.contains(&secret), "{secret} survived:\n{out}");
        }

        #[test]
        fn text_without_credentials_is_unchanged(
            values in proptest::collection::vec(plain_text(), 0..8),
            flags in proptest::collection::vec(proptest::sample::select(PLAIN_FLAGS.to_vec()), 0..8),
            variable in proptest::sample::select(PLAIN_VARIABLES.to_vec()),
            key in proptest::sample::select(PLAIN_KERNEL_KEYS.to_vec()),
        ) {
            let mut line: Vec<String> = vec!["/app/llama-server".to_owned()];
            for (flag, value) in flags.iter().zip(values.iter().cycle()) {
                line.push((*flag).to_owned());
                line.push(value.clone());
                line.push(format!("{flag}={value}"));
            }
            line.extend(values.iter().cloned());
            let mut redacted = line.clone();
            redact_args(&mut redacted);
            prop_assert_eq!(&redacted, &line);
            for value in &values {
                prop_assert_eq!(&redact_env_value(variable, value), value);
                let arg = KernelArgument { key: key.to_owned(), value: Some(value.clone()) };
                prop_assert_eq!(redact_argument(&arg), None);
            }
        }

        #[test]
        fn never_panics_and_redacts_once_for_all(text in "\\PC{0,80}", key in "[a-z._]{1,20}") {
            let once = redact_text(&text).into_owned();
            prop_assert_eq!(redact_text(&once), once.as_str());
            let mut args = vec![text.clone(), text.clone()];
            redact_args(&mut args);
            let _ = redact_env_value(&key, &text);
            let arg = KernelArgument { key, value: Some(text) };
            if let Some(r) = redact_argument(&arg) {
                prop_assert!(r.value.as_deref().is_some_and(|v| v.contains(PLACEHOLDER_START)));
            }
        }
    }
}
