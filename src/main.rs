//! The `verigator-sync` binary: parse the command line, run the subcommand, exit with its code.

use std::io::Write;
use std::process::ExitCode;

use verigator_sync::cli::{Cli, Command};
use verigator_sync::user::printable;
use verigator_sync::{commands, demo, exit};

fn main() -> ExitCode {
    let cli = Cli::parse_with_color();
    let result = match cli.command {
        Command::Import(args) => commands::import(args),
        Command::Status(args) => commands::status(args),
        Command::Export(args) => commands::export(args),
        Command::Reconcile(args) => commands::reconcile(args),
        Command::Simulate(args) => commands::simulate(args),
        Command::Demo => demo::run(),
        Command::Completions(args) => commands::completions(&args),
        Command::Man => commands::man(),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // The reader went away (`| head`): like the tools beside it, end quietly.
        Err(error) if error.is_broken_pipe() => ExitCode::from(exit::OK),
        Err(error) => {
            // Messages quote paths, ids and servers: nothing raw reaches the terminal.
            let _ = writeln!(
                std::io::stderr().lock(),
                "error: {}",
                printable(&error.to_string())
            );
            ExitCode::from(exit::of(&error))
        }
    }
}
