//! The sensors' housekeeping clock: a kernel timer (`timerfd`) read through the runtime.
//!
//! A tokio interval of a few seconds wakes its thread about three times per period (the
//! timer wheel wakes at a coarse slot's boundary, then a finer one's, then at the deadline);
//! a periodic `timerfd` wakes it once. Idle, that is most of what the daemon does.

use std::{io, os::fd::OwnedFd, time::Duration};

use nix::sys::{
    time::TimeSpec,
    timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
};
use tokio::io::unix::AsyncFd;

/// A periodic timer; [`Ticker::tick`] completes once per period (missed periods are not
/// made up).
pub struct Ticker {
    fd: AsyncFd<OwnedFd>,
}

impl Ticker {
    /// A timer whose first tick is one `period` from now.
    pub fn new(period: Duration) -> io::Result<Self> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        timer.set(
            Expiration::Interval(TimeSpec::from_duration(period)),
            TimerSetTimeFlags::empty(),
        )?;
        // SAFETY: the AsyncFd owns the descriptor, so it stays open and the same for the
        // AsyncFd's whole life.
        let fd = unsafe {
            AsyncFd::register_with_interest(OwnedFd::from(timer), tokio::io::Interest::READABLE)
        }?;
        Ok(Self { fd })
    }

    /// Waits for the next period to end.
    pub async fn tick(&self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                // The runtime is shutting down: never tick again.
                return std::future::pending().await;
            };
            // The count of periods ended since the last read (8 bytes).
            let mut expirations = [0u8; 8];
            if nix::unistd::read(self.fd.get_ref(), &mut expirations) == Ok(8) {
                return;
            }
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_ticks_once_per_period() {
        let t = Ticker::new(Duration::from_millis(30)).expect("timerfd");
        let start = std::time::Instant::now();
        t.tick().await;
        t.tick().await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(60), "{took:?}");
    }
}
