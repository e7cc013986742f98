//! `fim scan init` and `fim scan check`: the baseline without the daemon, in AIDE's habits.
//!
//! `init` builds the baseline from the watched paths; `check` compares the disk with it and
//! reports every difference. Exit status of `check`, as AIDE's: 0 when nothing differs,
//! otherwise the sum of 1 (added), 2 (removed) and 4 (changed); 17 for a bad watch list,
//! 18 for a baseline or I/O error. With a terminal, a progress line goes to stderr and a
//! readable report to stdout; otherwise stdout gets one ECS JSON document per difference.

use std::{
    io::{IsTerminal, Write as _},
    path::Path,
    process::ExitCode,
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

use fim_core::{
    attrs::{Attr, Snapshot},
    baseline::{Access, Baseline, BaselineError},
    ecs::write_ecs,
    event::{Action, Origin, Stamped, Stamper, unix_now_ns},
    paths::render_bytes,
    watch::WatchSet,
};

use crate::integrity::{
    observe::Limits,
    reconcile::{Unseen, difference, found_event},
    scan::{ScanItem, ScanOptions, scan},
};

/// Exit status for a bad watch list.
pub const EXIT_BAD_WATCH: u8 = 17;
/// Exit status for a baseline or I/O error.
pub const EXIT_IO: u8 = 18;

/// What both subcommands need.
pub struct ScanArgs<'a> {
    /// The watched paths.
    pub watch: &'a WatchSet,
    /// Where the baseline lives.
    pub state_dir: &'a Path,
    /// Worker threads.
    pub threads: usize,
    /// Hashing limits.
    pub limits: Limits,
}

fn progress() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {pos} files, {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

fn tick(bar: &Option<ProgressBar>, bytes: &mut u64, s: &Option<Snapshot>) {
    if let Some(bar) = bar {
        *bytes += s.as_ref().map_or(0, |s| s.attrs.size);
        bar.inc(1);
        if bar.position() % 256 == 0 {
            bar.set_message(format!("{:.1} MB read", *bytes as f64 / 1e6));
        }
    }
}

fn fail(e: BaselineError) -> ExitCode {
    eprintln!("fim: error: {e}");
    ExitCode::from(EXIT_IO)
}

/// `fim scan init`.
pub fn init(args: &ScanArgs<'_>) -> ExitCode {
    let started = Instant::now();
    let mut baseline = match Baseline::open(args.state_dir, Access::Write) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    if let Err(e) = baseline.clear() {
        return fail(e);
    }
    let bar = progress();
    let mut bytes = 0u64;
    let mut failures = 0u64;
    let mut error = None;
    let opts = ScanOptions {
        threads: args.threads,
        limits: args.limits.clone(),
        reuse_from: None,
    };
    let cancel = AtomicBool::new(false);
    let count = scan(
        &args.watch.scan_roots(),
        &opts,
        &cancel,
        |item| match item {
            ScanItem::Observed { path, snapshot } => {
                tick(&bar, &mut bytes, &snapshot);
                if let Some(s) = &snapshot
                    && args.watch.matches(&path)
                    && error.is_none()
                    && let Err(e) = baseline
                        .put(&path, s)
                        .and_then(|()| baseline.commit_if_large())
                {
                    error = Some(e);
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            ScanItem::Failed { path, error } => {
                failures += 1;
                report_failure(&bar, &path, &error);
            }
        },
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(e) = error {
        return fail(e);
    }
    let result = baseline
        .set_meta("initialized", &unix_now_ns().to_string())
        .and_then(|()| baseline.commit())
        .and_then(|()| baseline.len());
    match result {
        Ok(n) => {
            eprintln!(
                "fim: baseline of {n} entries written to {} ({count} paths scanned, {failures} unreadable) in {:.2} s",
                args.state_dir.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn report_failure(bar: &Option<ProgressBar>, path: &[u8], error: &str) {
    let line = format!("fim: warning: {}: {error}", render_bytes(path));
    match bar {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    }
}

/// Writes one difference: ECS JSON when stdout is not a terminal, a readable line when it is.
struct Report {
    json: bool,
    out: std::io::BufWriter<std::io::Stdout>,
    stamper: Stamper,
    /// The host and agent each event names.
    reporter: fim_core::ecs::Reporter,
    counts: [u64; 3],
}

impl Report {
    fn difference(
        &mut self,
        action: Action,
        path: Vec<u8>,
        before: Option<Snapshot>,
        after: Option<Snapshot>,
        changed: Vec<Attr>,
    ) -> std::io::Result<()> {
        self.counts[match action {
            Action::Added => 0,
            Action::Removed => 1,
            _ => 2,
        }] += 1;
        let stamp = self.stamper.next_stamp();
        if self.json {
            let event = found_event(action, path, before, after, changed, Origin::Check);
            write_ecs(
                &mut self.out,
                &Stamped {
                    stamp,
                    event: event.into(),
                    rules: None,
                },
                &self.reporter,
            )?;
            writeln!(self.out)
        } else {
            let what: Vec<&str> = changed.iter().map(|a| a.as_str()).collect();
            let detail = if what.is_empty() {
                String::new()
            } else {
                format!(" ({})", what.join(", "))
            };
            writeln!(
                self.out,
                "{:<8} {}{detail}",
                action.as_str(),
                render_bytes(&path)
            )
        }
    }
}

/// `fim scan check`.
pub fn check(args: &ScanArgs<'_>) -> ExitCode {
    let started = Instant::now();
    let mut baseline = match Baseline::open(args.state_dir, Access::Read) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    if let Err(e) = baseline.scan_begin() {
        return fail(e);
    }
    let mut report = Report {
        json: !std::io::stdout().is_terminal(),
        out: std::io::BufWriter::new(std::io::stdout()),
        stamper: Stamper::default(),
        reporter: crate::host::reporter(),
        counts: [0; 3],
    };
    let bar = progress();
    let mut bytes = 0u64;
    let mut failures = 0u64;
    let mut error: Option<String> = None;
    let opts = ScanOptions {
        threads: args.threads,
        limits: args.limits.clone(),
        reuse_from: None,
    };
    let cancel = AtomicBool::new(false);
    let count = scan(&args.watch.scan_roots(), &opts, &cancel, |item| {
        if error.is_some() {
            return;
        }
        let step = match item {
            ScanItem::Observed { path, snapshot } => {
                tick(&bar, &mut bytes, &snapshot);
                match (snapshot, args.watch.matches(&path)) {
                    (Some(after), true) => compare(&mut baseline, &mut report, path, after),
                    _ => Ok(()),
                }
            }
            ScanItem::Failed { path, error } => {
                failures += 1;
                report_failure(&bar, &path, &error);
                // Unreadable is not removed.
                baseline.seen(&path).map_err(|e| e.to_string())
            }
        };
        if let Err(e) = step {
            error = Some(e);
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if error.is_none() {
        error = removed(&baseline, &mut report, args.watch).err();
    }
    if let Err(e) = report.out.flush() {
        error.get_or_insert(format!("writing the report: {e}"));
    }
    if let Some(e) = error {
        eprintln!("fim: error: {e}");
        return ExitCode::from(EXIT_IO);
    }
    let [added, removed, changed] = report.counts;
    eprintln!(
        "fim: {count} paths checked in {:.2} s: {added} added, {removed} removed, {changed} changed, {failures} unreadable",
        started.elapsed().as_secs_f64()
    );
    let code = u8::from(added > 0) | (u8::from(removed > 0) << 1) | (u8::from(changed > 0) << 2);
    ExitCode::from(code)
}

fn compare(
    baseline: &mut Baseline,
    report: &mut Report,
    path: Vec<u8>,
    after: Snapshot,
) -> Result<(), String> {
    baseline.seen(&path).map_err(|e| e.to_string())?;
    let before = baseline.get(&path).map_err(|e| e.to_string())?;
    let Some((action, changed)) = difference(before.as_ref(), &after) else {
        return Ok(());
    };
    report
        .difference(action, path, before, Some(after), changed)
        .map_err(|e| format!("writing the report: {e}"))
}

fn removed(baseline: &Baseline, report: &mut Report, watch: &WatchSet) -> Result<(), String> {
    let mut unseen = Unseen::default();
    loop {
        let batch = unseen.next_batch(baseline).map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok(());
        }
        for (path, before) in batch {
            if watch.matches(&path) {
                report
                    .difference(Action::Removed, path, Some(before), None, Vec::new())
                    .map_err(|e| format!("writing the report: {e}"))?;
            }
        }
    }
}
