//! The integrity engine: what changed, with values before and after.
//!
//! The pure model (attributes, digests, diffs: [`fim_core::attrs`]), the digest
//! ([`fim_core::hash`]) and the baseline store ([`fim_core::baseline`]) are platform-free,
//! in `fim-core`. Here: [`observe`] reads one file from the disk; [`scan`] walks the watched
//! roots in parallel; [`engine`] is the daemon stage that enriches sensor events and keeps
//! the baseline current; [`order`] keeps results in event order; [`supersede`] tells which
//! events of a batch a later one has made pointless to observe.

pub mod engine;
pub mod observe;
pub mod order;
pub mod scan;
pub mod supersede;
