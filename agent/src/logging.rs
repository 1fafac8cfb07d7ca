//! How both binaries write their log to standard error: text for a person (colour only at a terminal), or one JSON object per line for a log shipper.

/// `--log-format`: `text` is plain lines, coloured only when standard error is a terminal and
/// `NO_COLOR` is unset; `json` is one object per line (`timestamp`, `level`, `fields.message`,
/// `target`), never coloured. (The variants carry no doc comments: clap would show each value's
/// help on a line of its own in every command's `--help`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the process's log writer; `filter` is an `EnvFilter` directive (`warn`,
/// `nodectl_agent=debug`).
pub fn init(filter: tracing_subscriber::EnvFilter, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_ansi(false).init(),
        // Colour codes only for a person at a terminal: in a pipe, a file or a log shipper
        // they are noise in every line.
        LogFormat::Text => builder
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none(),
            )
            .init(),
    }
}
