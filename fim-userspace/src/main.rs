//! The `fim` binary: Linux's sensors and integrity engine, or on Windows the registry and
//! file poller; on other targets this build has nothing to watch with and says so.

use std::process::ExitCode;

#[cfg(target_os = "linux")]
mod cli;

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    cli::main()
}

#[cfg(windows)]
fn main() -> ExitCode {
    fim_userspace::windows::cli::main()
}

#[cfg(not(any(target_os = "linux", windows)))]
fn main() -> ExitCode {
    eprintln!(
        "fim: error: this build has no sensor for {}: fim watches files on Linux only",
        std::env::consts::OS
    );
    ExitCode::from(2)
}
