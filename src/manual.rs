//! What the shell and `man` need: completion scripts (`clap_complete`) and the man page
//! (`clap_mangen`), both generated from the same clap definitions as `--help`, so they never
//! drift from the options.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::exit;

/// Writes the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut command = Cli::command();
    // Into a buffer first: `generate` drops write errors, and a full disk must not pass unseen.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "verigator-sync", &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// The variables the tool reads, and what for.
const ENVIRONMENT: [(&str, &str); 10] = [
    (
        "VERIGATOR_USERNAME",
        "the Messente API username (only from the environment)",
    ),
    (
        "VERIGATOR_PASSWORD",
        "the Messente API password (only from the environment, never a flag)",
    ),
    (
        "VERIGATOR_SERVICE_ID",
        "the Verigator ServiceID, as --service-id",
    ),
    ("VERIGATOR_BASE_URL", "the API's base URL, as --base-url"),
    ("VERIGATOR_LEDGER", "the ledger file, as --ledger"),
    (
        "VERIGATOR_METRICS_FILE",
        "where import writes its metrics, as --metrics-file",
    ),
    (
        "HTTPS_PROXY, ALL_PROXY",
        "the proxy for https:// requests (lower case too)",
    ),
    (
        "NO_PROXY",
        "hosts reached directly, not through the proxy (lower case too)",
    ),
    (
        "TMPDIR",
        "where the user list and a dry run's new ids spill to unnamed temporary files",
    ),
    ("NO_COLOR", "no colour in help and usage errors"),
];

/// Writes the man page: the top command, every subcommand with its options, the exit codes and
/// the environment.
pub fn man(out: &mut dyn Write) -> io::Result<()> {
    let command = Cli::command();
    clap_mangen::Man::new(command.clone()).render(out)?;
    for sub in command.get_subcommands() {
        let name = format!("verigator-sync {}", sub.get_name());
        writeln!(out, ".SH \"{}\"", roff(&name.to_uppercase()))?;
        if let Some(about) = sub.get_about() {
            writeln!(out, "{}", roff(&about.to_string()))?;
        }
        let page = clap_mangen::Man::new(sub.clone().bin_name(name));
        let mut sections = Vec::new();
        page.render_synopsis_section(&mut sections)?;
        page.render_options_section(&mut sections)?;
        // Its synopsis and options are subsections of the subcommand's own section.
        for line in String::from_utf8_lossy(&sections).lines() {
            match line.strip_prefix(".SH ") {
                Some(title) => writeln!(out, ".SS {title}")?,
                None => writeln!(out, "{line}")?,
            }
        }
    }
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for (code, meaning) in [
        (
            exit::OK,
            "every row of the input is synced or present in the ledger",
        ),
        (
            exit::INCOMPLETE,
            "the run finished, but some rows are not (the warnings or --report say why), or --prune deleted nothing (the limit, an unreadable id)",
        ),
        (
            exit::USAGE,
            "usage, configuration or input error; nothing was sent",
        ),
        (
            exit::ABORTED,
            "aborted: a signal, 401/403/404 from the API, an outage, a ledger in use or failing",
        ),
    ] {
        writeln!(out, ".TP\n{code}\n{}", roff(meaning))?;
    }
    writeln!(out, ".SH ENVIRONMENT")?;
    for (name, meaning) in ENVIRONMENT {
        writeln!(out, ".TP\n\\fB{}\\fR\n{}", roff(name), roff(meaning))?;
    }
    out.flush()
}

/// Text escaped for roff: backslashes and hyphens, and no line starting with a control character.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}
