//! Per-rule rate limits: a rule that says `rate_limit = "100/1m"` reports at most 100
//! events in a window of one minute; what is held back beyond that is not lost from sight
//! but summed up, at the end of the window, in one summary (how many, from when to when,
//! the last path). Noise control for a rule over a busy place; the baseline is kept up to
//! date either way (this runs after the integrity engine).
//!
//! Pure logic: the caller passes the clock.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::rules::Matched;

/// What a rate-limited rule held back in one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The rules of the held events (the limiting rule first).
    pub matched: Arc<Matched>,
    /// Events held back.
    pub held: u64,
    /// When the first and the last of them happened (ns since the epoch).
    pub first_ns: i128,
    /// See `first_ns`.
    pub last_ns: i128,
    /// The path of the last one.
    pub last_path: Vec<u8>,
    /// The rule's limit: events per window.
    pub limit: u32,
    /// The rule's window.
    pub window: Duration,
}

struct Window {
    start: Instant,
    passed: u32,
    held: Option<Summary>,
}

/// The open windows, by limiting rule.
#[derive(Default)]
pub struct RateLimiter {
    windows: HashMap<String, Window>,
}

impl RateLimiter {
    /// Whether an event under `matched` at `path` (happening at `time_ns`, seen `now`) is
    /// reported; a window that ended before it is summed up first (returned).
    pub fn admit(
        &mut self,
        matched: &Arc<Matched>,
        path: &[u8],
        time_ns: i128,
        now: Instant,
    ) -> (bool, Option<Summary>) {
        let Some((limit, window)) = matched.rate else {
            return (true, None);
        };
        let Some((rule, _)) = matched.rules.first() else {
            return (true, None);
        };
        let w = self.windows.entry(rule.clone()).or_insert(Window {
            start: now,
            passed: 0,
            held: None,
        });
        let mut ended = None;
        if now.duration_since(w.start) >= window {
            ended = w.held.take();
            *w = Window {
                start: now,
                passed: 0,
                held: None,
            };
        }
        if w.passed < limit {
            w.passed += 1;
            return (true, ended);
        }
        let held = w.held.get_or_insert_with(|| Summary {
            matched: matched.clone(),
            held: 0,
            first_ns: time_ns,
            last_ns: time_ns,
            last_path: Vec::new(),
            limit,
            window,
        });
        held.held += 1;
        held.last_ns = time_ns;
        held.last_path = path.to_vec();
        (false, ended)
    }

    /// When the next window with held events ends.
    pub fn next_due(&self) -> Option<Instant> {
        self.windows
            .values()
            .filter_map(|w| w.held.as_ref().and_then(|h| w.start.checked_add(h.window)))
            .min()
    }

    /// The summaries of the windows that ended by `now` (their rules start afresh).
    pub fn due(&mut self, now: Instant) -> Vec<Summary> {
        let mut out = Vec::new();
        self.windows.retain(|_, w| {
            let ended = w
                .held
                .as_ref()
                .is_some_and(|h| w.start.checked_add(h.window).is_some_and(|end| now >= end));
            if ended {
                out.extend(w.held.take());
            }
            !ended
        });
        out.sort_by_key(|s| s.first_ns);
        out
    }

    /// Every summary still open (at shutdown).
    pub fn drain(&mut self) -> Vec<Summary> {
        let mut out: Vec<Summary> = self.windows.drain().filter_map(|(_, w)| w.held).collect();
        out.sort_by_key(|s| s.first_ns);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity;

    fn limited(rule: &str, limit: u32, window: Duration) -> Arc<Matched> {
        Arc::new(Matched {
            rules: vec![(rule.into(), rule.into())],
            severity: Severity::Low,
            techniques: Vec::new(),
            tags: Vec::new(),
            compare: None,
            rate: Some((limit, window)),
        })
    }

    #[test]
    fn beyond_the_limit_events_are_held_and_summed_up_when_the_window_ends() {
        let t0 = Instant::now();
        let m = limited("logs", 2, Duration::from_secs(60));
        let mut r = RateLimiter::default();
        let admitted: Vec<bool> = (0..5)
            .map(|i| r.admit(&m, format!("/l/{i}").as_bytes(), i, t0).0)
            .collect();
        assert_eq!(admitted, [true, true, false, false, false]);
        assert_eq!(r.next_due(), Some(t0 + Duration::from_secs(60)));
        assert!(r.due(t0 + Duration::from_secs(59)).is_empty());
        let s = r.due(t0 + Duration::from_secs(60));
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].held, s[0].first_ns, s[0].last_ns), (3, 2, 4));
        assert_eq!(s[0].last_path, b"/l/4");
        assert_eq!(r.next_due(), None);
        // A new window: the limit applies afresh.
        assert!(r.admit(&m, b"/l/5", 5, t0 + Duration::from_secs(61)).0);
    }

    #[test]
    fn an_event_after_the_window_sums_it_up_first_and_rules_count_apart() {
        let t0 = Instant::now();
        let (a, b) = (
            limited("a", 1, Duration::from_secs(10)),
            limited("b", 1, Duration::from_secs(10)),
        );
        let mut r = RateLimiter::default();
        assert!(r.admit(&a, b"/a", 0, t0).0);
        assert!(r.admit(&b, b"/b", 0, t0).0, "each rule has its own window");
        assert!(!r.admit(&a, b"/a", 1, t0).0);
        let (passed, ended) = r.admit(&a, b"/a", 2, t0 + Duration::from_secs(10));
        assert!(passed);
        assert_eq!(ended.map(|s| s.held), Some(1));
        // Unlimited rules pass untouched.
        let mut free = (*a).clone();
        free.rate = None;
        assert_eq!(r.admit(&Arc::new(free), b"/x", 3, t0), (true, None));
        assert!(!r.admit(&b, b"/b", 4, t0).0);
        assert_eq!(r.drain().len(), 1);
    }
}
