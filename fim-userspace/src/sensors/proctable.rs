//! The process table behind `--sensor auto`: fed by eBPF `sched_process_exec`, `task_newtask`, `sched_process_exit`
//! records, read by the fanotify sensor, whose events carry only a thread id. A process that
//! exited before its event was read is still attributed, because its entry outlives it for
//! [`KEEP_EXITED`]. Misses fall back to `/proc`.
//!
//! Pure bookkeeping: time is passed in, so tests need no kernel.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use fim_core::event::Process;

use crate::sensors::ebpf::decode::{ProcChange, ProcRecord};

/// How long an exited task stays known (events queued in fanotify are read well within).
pub const KEEP_EXITED: Duration = Duration::from_secs(60);
/// Entries beyond this evict the oldest exited ones first.
const MAX_ENTRIES: usize = 131_072;

#[derive(Clone, Debug)]
struct Entry {
    process: Process,
    exited_at: Option<Instant>,
    /// Taken from the task itself (exec, exit, /proc). A fork entry is only the parent's
    /// copy: the child may rename itself (threads do) before it acts.
    exact: bool,
}

/// Known tasks by thread id.
#[derive(Debug, Default)]
pub struct ProcTable {
    tasks: HashMap<u32, Entry>,
}

impl ProcTable {
    /// Applies one kernel record observed at `now`.
    pub fn apply_at(&mut self, r: ProcRecord, now: Instant) {
        match r.change {
            ProcChange::Exec => {
                self.tasks.insert(
                    r.process.tid,
                    Entry {
                        process: r.process,
                        exited_at: None,
                        exact: true,
                    },
                );
            }
            ProcChange::Fork { child, thread } => {
                // The child runs the parent's program until it execs. A new thread shares
                // the parent's tgid (the kernel said so from the clone flags); a new process
                // is its own leader.
                let mut p = r.process;
                if !thread {
                    p.ppid = p.pid;
                    p.pid = child;
                }
                p.tid = child;
                self.tasks.insert(
                    child,
                    Entry {
                        process: p,
                        exited_at: None,
                        exact: false,
                    },
                );
            }
            ProcChange::Rename { tid, name } => {
                // A task not known yet is read from /proc when it acts, name included.
                if let Some(e) = self.tasks.get_mut(&tid) {
                    e.process.name = name;
                }
            }
            ProcChange::Cgroup { pid, id } => {
                for e in self.tasks.values_mut() {
                    if e.process.pid == pid && e.exited_at.is_none() {
                        e.process.cgroup_id = id;
                    }
                }
            }
            ProcChange::Exit => {
                // The exiting task's own view is exact, except that the executable may be
                // gone by then (its mm is released first): keep the one known before.
                let exe = self
                    .tasks
                    .get(&r.process.tid)
                    .and_then(|e| e.process.executable.clone());
                let mut process = r.process;
                if process.executable.is_none() {
                    process.executable = exe;
                }
                self.tasks.insert(
                    process.tid,
                    Entry {
                        process,
                        exited_at: Some(now),
                        exact: true,
                    },
                );
            }
        }
        if self.tasks.len() > MAX_ENTRIES {
            self.evict(now);
        }
    }

    /// Applies one kernel record observed now.
    pub fn apply(&mut self, r: ProcRecord) {
        self.apply_at(r, Instant::now());
    }

    /// The task with thread id `tid`, if known (alive, or exited recently), and whether
    /// the entry is exact (see [`Entry`]); an inexact one should yield to `/proc`.
    pub fn get(&self, tid: u32) -> Option<(Process, bool)> {
        self.tasks.get(&tid).map(|e| (e.process.clone(), e.exact))
    }

    /// Remembers a task found in `/proc`.
    pub fn remember(&mut self, p: &Process) {
        self.tasks.insert(
            p.tid,
            Entry {
                process: p.clone(),
                exited_at: None,
                exact: true,
            },
        );
    }

    /// Forgets tasks that exited more than [`KEEP_EXITED`] before `now`.
    pub fn evict(&mut self, now: Instant) {
        self.tasks.retain(|_, e| {
            e.exited_at
                .is_none_or(|t| now.duration_since(t) < KEEP_EXITED)
        });
    }

    /// Number of known tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task is known.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(change: ProcChange, pid: u32, tid: u32, name: &str) -> ProcRecord {
        ProcRecord {
            change,
            process: Process {
                pid,
                tid,
                ppid: 1,
                name: name.into(),
                executable: Some(format!("/usr/bin/{name}").into_bytes()),
                ..Process::default()
            },
        }
    }

    #[test]
    fn exited_tasks_are_kept_then_forgotten() {
        let mut t = ProcTable::default();
        let t0 = Instant::now();
        t.apply_at(rec(ProcChange::Exec, 500, 500, "sh"), t0);
        let mut exit = rec(ProcChange::Exit, 500, 500, "sh");
        exit.process.executable = None;
        t.apply_at(exit, t0);
        let (p, exact) = t.get(500).expect("kept after exit");
        assert!(exact);
        assert_eq!(p.name, "sh");
        assert_eq!(p.executable.as_deref(), Some(&b"/usr/bin/sh"[..]));
        t.evict(t0 + KEEP_EXITED / 2);
        assert!(t.get(500).is_some());
        t.evict(t0 + KEEP_EXITED * 2);
        assert!(t.get(500).is_none());
    }

    #[test]
    fn renames_and_cgroup_moves_apply_to_the_known_task() {
        let mut t = ProcTable::default();
        t.apply(rec(ProcChange::Exec, 800, 800, "python3"));
        t.apply(rec(
            ProcChange::Fork {
                child: 801,
                thread: true,
            },
            800,
            800,
            "python3",
        ));
        t.apply(rec(
            ProcChange::Rename {
                tid: 800,
                name: "worker".into(),
            },
            800,
            800,
            "python3",
        ));
        assert_eq!(t.get(800).expect("known").0.name, "worker");
        assert_eq!(t.get(801).expect("thread").0.name, "python3", "per thread");
        t.apply(rec(
            ProcChange::Cgroup { pid: 800, id: 42 },
            1,
            1,
            "systemd",
        ));
        assert_eq!(t.get(800).expect("known").0.cgroup_id, 42);
        assert_eq!(
            t.get(801).expect("thread").0.cgroup_id,
            42,
            "the whole process moves"
        );
        t.apply(rec(
            ProcChange::Rename {
                tid: 999,
                name: "x".into(),
            },
            1,
            1,
            "init",
        ));
        assert!(t.get(999).is_none(), "an unknown task is left to /proc");
    }

    #[test]
    fn a_forked_child_runs_its_parents_program() {
        let mut t = ProcTable::default();
        let fork = |child, thread| ProcChange::Fork { child, thread };
        t.apply(rec(fork(700, false), 600, 600, "bash"));
        let (c, exact) = t.get(700).expect("child");
        assert!(!exact, "a fork entry yields to /proc");
        assert_eq!(
            (c.pid, c.tid, c.ppid, c.name.as_str()),
            (700, 700, 600, "bash")
        );
        // A new thread (an io_uring worker, say) belongs to its parent's process.
        t.apply(rec(fork(701, true), 600, 600, "bash"));
        let (c, _) = t.get(701).expect("thread");
        assert_eq!((c.pid, c.tid, c.ppid), (600, 701, 1));
    }
}
