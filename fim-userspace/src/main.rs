//! The `fim` binary. Its sensors and integrity engine are Linux's; on other targets this
//! build has nothing to watch with yet and says so.

use std::process::ExitCode;

#[cfg(target_os = "linux")]
mod cli;

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    cli::main()
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    eprintln!(
        "fim: error: this build has no sensor for {}: fim watches files on Linux only",
        std::env::consts::OS
    );
    ExitCode::from(2)
}
