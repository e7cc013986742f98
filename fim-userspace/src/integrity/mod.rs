//! The integrity engine: what changed, with values before and after.
//!
//! The pure model (attributes, digests, diffs: [`fim_core::attrs`]), the digest
//! ([`fim_core::hash`]) and the baseline store ([`fim_core::baseline`]) are platform-free,
//! in `fim-core`. Here, one room per concern:
//! - [`engine`]: the daemon stage itself, its loop and the worker pool, wiring the rooms;
//! - [`schedule`]: what each event needs, and per-path order behind observations in flight
//!   (the backlog); [`order`] lets results out in input order; [`supersede`] tells which
//!   events of a batch a later one has made pointless to observe;
//! - [`burst`]: write bursts, hashed once at their end (close or quiet period);
//! - [`enrich`]: the values before and after an event (renames, exchanges, replaced
//!   targets, files replaced before they were read);
//! - [`reconcile`]: the disk compared with the baseline, shared by the daemon's scans and
//!   `fim scan check`; [`scan`] walks the watched roots in parallel;
//! - [`observe`]: reading one file from the disk (Linux calls).

pub mod burst;
pub mod engine;
#[cfg(test)]
mod engine_tests;
pub mod enrich;
pub mod observe;
pub mod order;
pub mod reconcile;
pub mod scan;
pub mod schedule;
pub mod supersede;
