//! Privileged tests: the real `fim` daemon, real BPF programs, real file operations.
//!
//! Each test watches its own temporary directory, performs one kind of operation from this
//! thread, and asserts the whole event: action, path(s), operation fields, and the acting
//! process. Run them with `cargo xtask test` (which builds the daemon and runs as root).

mod config;
mod exact;
mod fanotify;
mod integrity;
mod metrics;
mod ops;
mod scan;
mod sinks;
mod spool;
mod tiers;
mod volume;
