//! The sensors' housekeeping clock: a kernel timer (`timerfd`) read through the runtime.
//!
//! A tokio interval of a few seconds wakes its thread about three times per period (the
//! timer wheel wakes at a coarse slot's boundary, then a finer one's, then at the deadline);
//! a periodic `timerfd` wakes it once. Idle, that is most of what the daemon does.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
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
        // SAFETY: plain syscall; the descriptor is owned below.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let spec = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(period.subsec_nanos() as i32),
        };
        let value = libc::itimerspec {
            it_interval: spec,
            it_value: spec,
        };
        // SAFETY: valid descriptor and specification.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &value, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns the descriptor, so it stays open and the same for the
        // AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Self { fd })
    }

    /// Waits for the next period to end.
    pub async fn tick(&self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                // The runtime is shutting down: never tick again.
                return std::future::pending().await;
            };
            let mut expirations = [0u8; 8];
            // SAFETY: reads 8 bytes into a buffer of 8.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            if n == 8 {
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
