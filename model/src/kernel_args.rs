//! Kernel command-line arguments: one `key=value` argument, and command lines split and written the kernel's way.

use serde::{Deserialize, Serialize};

/// One argument of a kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelArgument {
    /// Left of the first `=`: `amdgpu.cwsr_enable`.
    pub key: String,
    /// Right of the first `=`; absent for a bare flag such as `quiet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl KernelArgument {
    /// One command-line token: `key=value` splits at the first `=`, anything else is a bare key.
    pub fn parse(token: &str) -> Self {
        match token.split_once('=') {
            Some((key, value)) => Self {
                key: key.to_owned(),
                value: Some(value.to_owned()),
            },
            None => Self {
                key: token.to_owned(),
                value: None,
            },
        }
    }

    /// The token as written in an argument list (Talos `extraKernelArgs`, a schematic), unquoted.
    pub fn render(&self) -> String {
        match &self.value {
            Some(value) => format!("{}={value}", self.key),
            None => self.key.clone(),
        }
    }
}

/// Splits `/proc/cmdline` the way the kernel does: whitespace separates arguments except
/// inside double quotes, and the quotes themselves are dropped (`a="b c"` → `a` = `b c`).
pub fn split_cmdline(cmdline: &str) -> Vec<KernelArgument> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut has_token = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_token = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_token {
                    args.push(KernelArgument::parse(&current));
                    current.clear();
                    has_token = false;
                }
            }
            c => {
                current.push(c);
                has_token = true;
            }
        }
    }
    if has_token {
        args.push(KernelArgument::parse(&current));
    }
    args
}

/// Writes arguments as one command line that [`split_cmdline`] reads back as the same list:
/// a value with white space (or an empty one) is put in double quotes, as the kernel expects.
///
/// The kernel has no escape for a double quote inside a value, so such an argument cannot be
/// written; `None` then.
pub fn render_cmdline(args: &[KernelArgument]) -> Option<String> {
    let mut parts = Vec::with_capacity(args.len());
    for arg in args {
        if arg.key.is_empty()
            || arg.key.contains('"')
            || arg.key.contains(char::is_whitespace)
            || arg.value.as_deref().is_some_and(|v| v.contains('"'))
            || (arg.value.is_none() && arg.key.contains('='))
        {
            return None;
        }
        parts.push(match &arg.value {
            Some(value) if value.is_empty() || value.contains(char::is_whitespace) => {
                format!("{}=\"{value}\"", arg.key)
            }
            _ => arg.render(),
        });
    }
    Some(parts.join(" "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn arg(key: &str, value: Option<&str>) -> KernelArgument {
        KernelArgument {
            key: key.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn cmdline_respects_quotes() {
        let args = split_cmdline(
            "BOOT_IMAGE=/vmlinuz quiet amdgpu.cwsr_enable=0 talos.platform=\"metal box\" \"a=b c\"\n",
        );
        assert_eq!(
            args,
            [
                arg("BOOT_IMAGE", Some("/vmlinuz")),
                arg("quiet", None),
                arg("amdgpu.cwsr_enable", Some("0")),
                arg("talos.platform", Some("metal box")),
                arg("a", Some("b c")),
            ]
        );
        assert_eq!(split_cmdline("  "), []);
        assert_eq!(split_cmdline("x=\"\""), [arg("x", Some(""))]);
    }

    #[test]
    fn parse_and_render_round_trip() {
        for text in ["a=b", "a", "a=b=c", "=x", ""] {
            assert_eq!(KernelArgument::parse(text).render(), text);
        }
    }

    #[test]
    fn rendered_cmdlines_quote_what_needs_it() {
        let args = [
            arg("quiet", None),
            arg("talos.platform", Some("metal box")),
            arg("x", Some("")),
        ];
        let line = render_cmdline(&args).unwrap();
        assert_eq!(line, "quiet talos.platform=\"metal box\" x=\"\"");
        assert_eq!(render_cmdline(&[arg("a", Some("say \"hi\""))]), None);
    }

    proptest::proptest! {
        #[test]
        fn split_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = split_cmdline(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn render_then_split_gives_the_same_arguments(
            args in proptest::collection::vec(
                ("[a-z_.]{1,12}", proptest::option::of("[a-z0-9 =,._-]{0,12}")),
                0..8,
            )
        ) {
            let args: Vec<KernelArgument> = args
                .into_iter()
                .map(|(key, value)| KernelArgument { key, value })
                .collect();
            let line = render_cmdline(&args).unwrap();
            proptest::prop_assert_eq!(split_cmdline(&line), args);
        }
    }
}
