//! Kernel arguments: idempotent edits of an argument list (never a duplicate) and lookups in a command line.

pub use nodectl_model::KernelArgument;
use nodectl_model::kernel_args::split_cmdline;

/// The argument that turns CWSR off in amdgpu.
pub const CWSR_KEY: &str = "amdgpu.cwsr_enable";

/// `amdgpu.cwsr_enable=0`.
pub fn cwsr_disabled() -> KernelArgument {
    KernelArgument {
        key: CWSR_KEY.to_owned(),
        value: Some("0".to_owned()),
    }
}

/// Makes `arg` present exactly once (`present`), dropping other values of the same key, or
/// removes every copy of it (of any value when `arg` is a bare key). Returns whether `args`
/// changed.
pub fn edit(args: &mut Vec<String>, arg: &KernelArgument, present: bool) -> bool {
    let before = args.clone();
    let wanted = arg.render();
    if present {
        let mut seen = false;
        args.retain(|a| {
            let parsed = KernelArgument::parse(a);
            if parsed.key != arg.key {
                return true;
            }
            if *a == wanted && !seen {
                seen = true;
                return true;
            }
            false
        });
        if !seen {
            args.push(wanted);
        }
    } else if arg.value.is_none() {
        args.retain(|a| KernelArgument::parse(a).key != arg.key);
    } else {
        args.retain(|a| *a != wanted);
    }
    *args != before
}

/// The value the kernel sees for `key` on a command line (split as the kernel splits it, double
/// quotes respected): the last occurrence wins. `Some(None)` for a bare `key`; `None` when absent.
pub fn cmdline_value(cmdline: &str, key: &str) -> Option<Option<String>> {
    split_cmdline(cmdline)
        .into_iter()
        .rev()
        .find(|arg| arg.key == key)
        .map(|arg| arg.value)
}

/// Whether a command line (or argument list) carries exactly `arg` as its effective value for the key.
pub fn cmdline_has(cmdline: &str, arg: &KernelArgument) -> bool {
    cmdline_value(cmdline, &arg.key).as_ref() == Some(&arg.value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn adding_is_idempotent() {
        let arg = cwsr_disabled();
        let mut args = strings(&["ttm.pages_limit=33554432"]);
        assert!(edit(&mut args, &arg, true));
        assert_eq!(
            args,
            strings(&["ttm.pages_limit=33554432", "amdgpu.cwsr_enable=0"])
        );
        assert!(!edit(&mut args, &arg, true));
        assert_eq!(args.len(), 2);
    }

    #[test]
    fn adding_removes_duplicates_and_other_values_of_the_key() {
        let arg = cwsr_disabled();
        let mut args = strings(&[
            "amdgpu.cwsr_enable=0",
            "amdgpu.cwsr_enable=1",
            "x",
            "amdgpu.cwsr_enable=0",
        ]);
        assert!(edit(&mut args, &arg, true));
        assert_eq!(args, strings(&["amdgpu.cwsr_enable=0", "x"]));
    }

    #[test]
    fn removing_drops_every_copy_and_nothing_else() {
        let arg = cwsr_disabled();
        let mut args = strings(&["amdgpu.cwsr_enable=0", "a=1", "amdgpu.cwsr_enable=0"]);
        assert!(edit(&mut args, &arg, false));
        assert_eq!(args, strings(&["a=1"]));
        assert!(!edit(&mut args, &arg, false));
    }

    #[test]
    fn cmdline_lookup_splits_as_the_kernel_does() {
        // Inside double quotes a space does not end an argument, so this is one argument.
        let line = "amdgpu.cwsr_enable=0 talos.note=\"see amdgpu.cwsr_enable=1\"";
        assert_eq!(cmdline_value(line, CWSR_KEY), Some(Some("0".to_owned())));
        assert!(cmdline_has(line, &cwsr_disabled()));
    }

    #[test]
    fn cmdline_lookup_takes_the_last_value() {
        let line = "console=tty0 amdgpu.cwsr_enable=1 quiet amdgpu.cwsr_enable=0\n";
        assert_eq!(cmdline_value(line, CWSR_KEY), Some(Some("0".to_owned())));
        assert_eq!(cmdline_value(line, "quiet"), Some(None));
        assert_eq!(cmdline_value(line, "missing"), None);
        assert!(cmdline_has(line, &cwsr_disabled()));
        assert!(!cmdline_has(
            "amdgpu.cwsr_enable=0 amdgpu.cwsr_enable=1",
            &cwsr_disabled()
        ));
        assert!(!cmdline_has("", &cwsr_disabled()));
    }

    proptest::proptest! {
        #[test]
        fn cmdline_lookups_never_panic(line in "\\PC{0,300}", key in "[a-z._=]{0,20}") {
            let _ = cmdline_value(&line, &key);
            let _ = cmdline_has(&line, &KernelArgument::parse(&key));
        }

        #[test]
        fn edits_never_duplicate(args in proptest::collection::vec("(amdgpu\\.cwsr_enable=[01]|x=[0-9])", 0..8)) {
            let arg = cwsr_disabled();
            let mut list = args.clone();
            edit(&mut list, &arg, true);
            proptest::prop_assert_eq!(list.iter().filter(|a| KernelArgument::parse(a).key == arg.key).count(), 1);
            let once = list.clone();
            proptest::prop_assert!(!edit(&mut list, &arg, true));
            proptest::prop_assert_eq!(&list, &once);
            edit(&mut list, &arg, false);
            proptest::prop_assert!(!list.contains(&arg.render()));
        }
    }

    #[test]
    fn removing_a_bare_key_drops_every_value_of_it() {
        let mut args = strings(&["amdgpu.gpu_recovery=1", "a=1", "amdgpu.gpu_recovery"]);
        assert!(edit(
            &mut args,
            &KernelArgument::parse("amdgpu.gpu_recovery"),
            false
        ));
        assert_eq!(args, strings(&["a=1"]));
    }
}
