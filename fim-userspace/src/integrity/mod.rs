//! The integrity engine: what changed, with values before and after.
//!
//! [`attrs`] is the pure model (attributes, digests, diffs); [`hash`] is the one place a
//! digest is computed; [`observe`] reads one file from the disk; [`baseline`] stores the
//! last known state; [`scan`] walks the watched roots in parallel; [`engine`] is the daemon
//! stage that enriches sensor events and keeps the baseline current; [`supersede`] tells
//! which events of a batch a later one has made pointless to observe.

pub mod attrs;
pub mod baseline;
pub mod engine;
pub mod hash;
pub mod observe;
pub mod order;
pub mod scan;
pub mod supersede;
