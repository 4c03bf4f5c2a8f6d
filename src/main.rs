use std::{io::Write, process::ExitCode};

use clap::Parser;
use visitcounter::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    // The command runs as a task on the runtime's workers, not on the main
    // thread that `block_on` polls: there, each watch event a worker's I/O
    // driver received had to wake the main thread, which woke the driver
    // back (two thread switches an event, and every wake-up at rest).
    let outcome = match tokio::spawn(run(Cli::parse())).await {
        Ok(outcome) => outcome,
        Err(joined) => std::panic::resume_unwind(joined.into_panic()),
    };
    match outcome {
        Ok(output) => match std::io::stdout().lock().write_all(output.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write to stdout: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
