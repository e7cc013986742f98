//! fim: a file integrity monitor.
//!
//! The modules follow one event's path: a sensor ([`sensors`]) sees a change in the kernel
//! and turns what it read into the sensor-neutral [`fim_core::event`] model; as a source
//! ([`sources`]) it feeds the pipeline, where the [`fim_core::watch`] set re-checks each
//! event, the [`integrity`] engine adds what changed, and the sinks ([`sinks`]) write it
//! out. [`daemon`] builds the pipeline from its description and wires it with bounded
//! channels and one shutdown token. What does not depend on Linux (the model, watch matching, the ECS
//! rendering, the baseline store, hashing) is in `fim-core`.

// Linux: the sensors, the integrity engine (its disk reads are Linux calls), the daemon
// that wires them and the `scan` command. Elsewhere only the platform-free pipeline parts
// build, for the sources other platforms will add.
#[cfg(target_os = "linux")]
pub mod commands;
#[cfg(target_os = "linux")]
pub mod control;
#[cfg(target_os = "linux")]
pub mod daemon;
pub mod host;
#[cfg(target_os = "linux")]
pub mod integrity;
#[cfg(target_os = "linux")]
pub mod memory;
pub mod metrics;
#[cfg(target_os = "linux")]
pub mod packages;
#[cfg(target_os = "linux")]
pub mod sensors;
pub mod sinks;
pub mod sources;
#[cfg(all(test, target_os = "linux"))]
mod test_support;
#[cfg(windows)]
pub mod windows;
