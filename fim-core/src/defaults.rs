//! Every setting's default, defined once: the command line shows these, and whatever else
//! sets the same things falls back to them.

use std::time::Duration;

/// A file still open for writing is hashed after this long without a close.
pub const HASH_QUIET: Duration = Duration::from_secs(2);
/// The watched paths are rescanned this often, to catch what real time missed.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(3600);
/// Files larger than this many bytes are reported as "not hashed: too large".
pub const HASH_MAX_SIZE: u64 = 1 << 30;

/// Largest size of a sink's on-disk spool (`spool_max_size`).
pub const SPOOL_MAX_SIZE: u64 = 1 << 30;
/// Events waiting in the integrity engine past which new ones pass without before/after
/// values (counted, and repaired by a rescan): a bound on memory.
pub const MAX_BACKLOG: usize = 8_192;
/// Where the baseline is kept.
#[cfg(unix)]
pub const STATE_DIR: &str = "/var/lib/fim";
/// Where the baseline is kept.
#[cfg(not(unix))]
pub const STATE_DIR: &str = r"C:\ProgramData\fim";
/// The configuration file read when `--config` does not name one (if it exists).
#[cfg(unix)]
pub const CONFIG_FILE: &str = "/etc/fim/fim.toml";
/// The configuration file read when `--config` does not name one (if it exists).
#[cfg(not(unix))]
pub const CONFIG_FILE: &str = r"C:\ProgramData\fim\fim.toml";

/// Where the metrics endpoint listens (`[metrics] address`).
pub const METRICS_ADDRESS: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9478),
);
/// A sink failing this long makes the daemon unhealthy.
pub const SINK_FAILING_AFTER: Duration = Duration::from_secs(300);
/// A sensor that has not read what the kernel holds for it this long makes the daemon
/// unhealthy.
pub const SENSOR_STALL_AFTER: Duration = Duration::from_secs(60);
