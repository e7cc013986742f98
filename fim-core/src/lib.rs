//! What every platform of fim shares, with no operating-system call of its own: the event
//! model ([`event`], about a file or a registry key or value: [`registry`]) and the
//! attributes it carries with their diff ([`attrs`]), the watched set and its matching
//! ([`watch`], on byte paths: [`paths`]), the Elastic Common Schema rendering ([`ecs`]), the
//! baseline store ([`baseline`], SQLite), the one place a digest is computed ([`hash`]),
//! every setting's default ([`defaults`]), the configuration file ([`config`]) and every
//! count the daemon keeps ([`telemetry`]). It builds for Linux and for Windows; the Linux
//! sensors and the daemon live in `fim-userspace`.

pub mod ancestry;
pub mod attrs;
pub mod baseline;
pub mod builtin;
pub mod config;
pub mod defaults;
pub mod ecs;
pub mod event;
pub mod filepoll;
pub mod hash;
pub mod outbox;
pub mod packages;
pub mod paths;
pub mod ratelimit;
pub mod registry;
pub mod rules;
pub mod telemetry;
pub mod watch;
pub mod wire;
