//! fim: a file integrity monitor for Linux.
//!
//! The modules follow one event's path: a sensor ([`sensors`]) sees a change in the kernel,
//! [`decode`] turns the raw record into the sensor-neutral [`event`] model, the [`watch`]
//! set re-checks it, and a sink ([`sinks`]) writes it out. [`daemon`] wires them together
//! with bounded channels and one shutdown token.

pub mod commands;
pub mod daemon;
pub mod decode;
pub mod event;
pub mod integrity;
pub mod paths;
pub mod sensors;
pub mod sinks;
pub mod watch;
