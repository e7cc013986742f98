//! Keeping the engine's output in the order events came in.
//!
//! Observations run in parallel and finish in any order, but what they mean must be
//! applied (to the baseline) and reported (to the SIEM) in the order the operations
//! happened: an `unlink sub/b` must never come out before the `rename a -> sub/b` that made
//! it. Each event takes a ticket when it enters the engine; its result is filed under that
//! ticket when ready, and results leave strictly by ticket.
//!
//! Pure bookkeeping, no I/O.

use std::collections::VecDeque;

/// A ticket: the position of an event in the engine's input order.
pub type Ticket = u64;

/// Results waiting for everything before them.
#[derive(Debug)]
pub struct Reorder<T> {
    /// `slots[0]` belongs to ticket `first`.
    slots: VecDeque<Option<T>>,
    first: Ticket,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Self {
            slots: VecDeque::new(),
            first: 0,
        }
    }
}

impl<T> Reorder<T> {
    /// Takes the next ticket.
    pub fn ticket(&mut self) -> Ticket {
        self.slots.push_back(None);
        self.first + self.slots.len() as u64 - 1
    }

    /// Files the result of `ticket`. A ticket already handed out and not yet taken is
    /// required; anything else is a logic error and is ignored in release builds.
    pub fn fill(&mut self, ticket: Ticket, result: T) {
        let Some(i) = ticket.checked_sub(self.first) else {
            debug_assert!(false, "ticket {ticket} was already taken");
            return;
        };
        match self.slots.get_mut(i as usize) {
            Some(slot) => {
                debug_assert!(slot.is_none(), "ticket {ticket} filled twice");
                *slot = Some(result);
            }
            None => debug_assert!(false, "ticket {ticket} was never handed out"),
        }
    }

    /// The oldest result, once everything before it has been taken.
    pub fn next_ready(&mut self) -> Option<(Ticket, T)> {
        if !matches!(self.slots.front(), Some(Some(_))) {
            return None;
        }
        let result = self.slots.pop_front().flatten()?;
        let ticket = self.first;
        self.first += 1;
        Some((ticket, result))
    }

    /// Tickets handed out and not yet taken.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether every ticket has been taken.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_leave_in_ticket_order_whatever_order_they_finish_in() {
        let mut r = Reorder::default();
        let (a, b, c) = (r.ticket(), r.ticket(), r.ticket());
        r.fill(c, "c");
        assert!(r.next_ready().is_none(), "c waits for a and b");
        r.fill(a, "a");
        assert_eq!(r.next_ready(), Some((a, "a")));
        assert!(r.next_ready().is_none(), "c still waits for b");
        let d = r.ticket();
        r.fill(d, "d");
        r.fill(b, "b");
        let rest: Vec<_> = std::iter::from_fn(|| r.next_ready())
            .map(|(_, v)| v)
            .collect();
        assert_eq!(rest, ["b", "c", "d"]);
        assert!(r.is_empty());
        assert_eq!(r.ticket(), 4, "tickets keep counting");
    }
}
