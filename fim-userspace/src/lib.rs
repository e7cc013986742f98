//! fim: a file integrity monitor for Linux.
//!
//! The modules follow one event's path: a sensor ([`sensors`]) sees a change in the kernel,
//! [`decode`] turns the raw record into the sensor-neutral [`fim_core::event`] model, the
//! [`fim_core::watch`] set re-checks it, the [`integrity`] engine adds what changed, and a
//! sink ([`sinks`]) writes it out. [`daemon`] wires them together with bounded channels and
//! one shutdown token. What does not depend on Linux (the model, watch matching, the ECS
//! rendering, the baseline store, hashing) is in `fim-core`.

pub mod commands;
pub mod daemon;
pub mod decode;
pub mod integrity;
pub mod sensors;
pub mod sinks;
