//! Throughput of fim's SHA-256 seam, measured like `openssl speed -evp sha256 -bytes 16384`:
//! one core, 16 KiB updates, for a fixed time. Prints `fim-sha256 <bytes per second>`.
//! Run by `cargo xtask bench hash`, which compares it with OpenSSL on the same machine.

use std::time::{Duration, Instant};

use fim_core::hash::Sha256;

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let block: Vec<u8> = (0..16384u32).map(|i| (i * 31) as u8).collect();
    let mut h = Sha256::new();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    let mut bytes = 0u64;
    while start.elapsed() < limit {
        for _ in 0..256 {
            h.update(&block);
        }
        bytes += 256 * block.len() as u64;
    }
    std::hint::black_box(h.finish());
    println!(
        "fim-sha256 {:.0}",
        bytes as f64 / start.elapsed().as_secs_f64()
    );
}
