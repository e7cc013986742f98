//! How fast each sink delivers, and what it costs: `cargo xtask bench sinks` runs this.
//!
//! First the shared part, done once per event whatever the number of sinks: rendering the
//! ECS document and appending it to the outbox (the spool every sink reads back from),
//! committed once per batch as the engine does. Then each sink gets the same events
//! (realistic ones: a write with values before and after, its process, its rule) through
//! its real runner thread and delivers them to a receiver on this machine: a file, a TCP
//! syslog receiver that counts octet-counted frames, an HTTP server that answers like
//! Elasticsearch. Each sink runs twice: fed live from its queue, and after an outage,
//! reading everything back from the spool. Measured: events per second until the receiver
//! has them all, and the CPU time of the sink's thread per event (reading back, framing,
//! compressing, sending), which the receivers' threads do not count in.

#[cfg(target_os = "linux")]
fn main() {
    bench::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {}

#[cfg(target_os = "linux")]
mod bench {
    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::TcpListener,
        sync::{
            Arc,
            atomic::{AtomicU64, Ordering},
        },
        time::{Duration, Instant},
    };

    use std::path::Path;

    use fim_core::{
        attrs::{Attrs, Content, FileType, Snapshot},
        baseline::{Access, Baseline},
        config::{Http, Payload, SinkConfig, SinkKind, Spool, Syslog, Tls, Transport},
        ecs::Reporter,
        event::{
            Action, FileEvent, Integrity, Origin, PathSource, Process, ReportedPath, Stamped,
            Stamper,
        },
        outbox::Record,
        telemetry::Telemetry,
    };
    use fim_userspace::sinks::{self, Batch, runner};

    /// Events per run, and per batch (one turn of the engine).
    const EVENTS: usize = 200_000;
    const BATCH: usize = 200;

    fn snapshot(size: u64, digest: u8) -> Snapshot {
        Snapshot {
            attrs: Attrs {
                file_type: FileType::File,
                size,
                mode: 0o644,
                uid: 0,
                gid: 0,
                ino: 1_234_567,
                dev_major: 254,
                dev_minor: 1,
                nlink: 1,
                mtime_ns: 1_764_460_800_123_456_789,
                ctime_ns: 1_764_460_800_123_456_789,
                symlink_target: None,
                acl_access: None,
                acl_default: None,
                capability: None,
                xattrs: Default::default(),
            },
            content: Some(Content::Sha256([digest; 32])),
            package: None,
        }
    }

    /// The batches: `EVENTS` writes to files under /etc/app, each with its values.
    fn batches() -> Vec<Vec<Stamped>> {
        let mut stamper = Stamper::default();
        (0..EVENTS / BATCH)
            .map(|b| {
                (0..BATCH)
                    .map(|i| {
                        let n = b * BATCH + i;
                        let mut ev = FileEvent::new(
                            Action::CloseWrite,
                            ReportedPath::new(
                                format!("/etc/app/conf.d/service-{n}.conf").into_bytes(),
                                PathSource::KernelObject,
                            ),
                            "ebpf-lsm",
                        );
                        ev.time_unix_ns = 1_764_460_800_000_000_000 + n as i128;
                        ev.process = Some(Process {
                            pid: 4242,
                            tid: 4242,
                            ppid: 1,
                            uid: 1000,
                            euid: 0,
                            gid: 1000,
                            egid: 0,
                            name: "vim".into(),
                            executable: Some(b"/usr/bin/vim.basic".to_vec()),
                            cgroup_id: 1,
                            start_boot_ns: 5_000_000_000,
                            exited: false,
                        });
                        ev.integrity = Some(
                            Integrity {
                                before: Some(snapshot(100, 1)),
                                after: Some(snapshot(120, 2)),
                                changed: vec![
                                    fim_core::attrs::Attr::Size,
                                    fim_core::attrs::Attr::Sha256,
                                ],
                                origin: Origin::Realtime,
                                replaced_target: false,
                                note: None,
                            }
                            .into(),
                        );
                        stamper.stamp(ev)
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Renders every event once and appends it to an outbox in `state`, one commit per
    /// batch, as the engine does (what is committed is then let go); the CPU time of each
    /// step. Then renders them again, untimed, for the sinks.
    fn render_and_spool(all: &[Vec<Stamped>], state: &Path) -> (Vec<Batch>, [Duration; 3]) {
        let by = Reporter::new("bench-host".into(), Some("0123456789abcdef".into()));
        let mut baseline = Baseline::open(state, Access::Write).expect("outbox");
        let (mut render, mut cef, mut spool) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let rendered = |batch: &[Stamped]| -> Vec<Record> {
            batch
                .iter()
                .map(|ev| Record::render(ev, &by).expect("renders"))
                .collect()
        };
        for batch in all {
            let t = thread_cpu();
            let records = rendered(batch);
            let t2 = thread_cpu();
            let records: Vec<Record> = records
                .into_iter()
                .map(|r| r.with_cef().expect("CEF"))
                .collect();
            let t3 = thread_cpu();
            baseline.append_outbox(&records).expect("appended");
            baseline.commit().expect("committed");
            spool += thread_cpu() - t3;
            cef += t3 - t2;
            render += t2 - t;
        }
        let batches = all
            .iter()
            .map(|b| {
                Arc::new(
                    rendered(b)
                        .into_iter()
                        .map(|r| r.with_cef().expect("CEF"))
                        .collect(),
                )
            })
            .collect();
        (batches, [render, cef, spool])
    }

    /// The calling thread's CPU time.
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// Runs the sink `config` over every batch; (wall time until `received` reaches
    /// `EVENTS`, CPU time of the sink's thread).
    fn run(
        config: SinkConfig,
        received: &AtomicU64,
        all: &[Batch],
        spooled_in: Option<&Path>,
    ) -> (Duration, Duration) {
        let by = Arc::new(Reporter::new(
            "bench-host".into(),
            Some("0123456789abcdef".into()),
        ));
        let sink = sinks::build(&config, &by).expect("the sink starts");
        let (tx, rx) = flume::bounded(64);
        let telemetry = Arc::new(Telemetry::default());
        // After an outage: nothing in the queue, everything in the spool.
        let spool = spooled_in.map(|state| {
            let _ = std::fs::remove_dir_all(state.join("sinks"));
            let head = Arc::new(AtomicU64::new(0));
            let spool =
                runner::Spool::open(state, &config.name, head.clone(), by.clone()).expect("spool");
            head.store(EVENTS as u64, Ordering::Release);
            spool
        });
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            let before = thread_cpu();
            runner::run(sink, rx, telemetry, runner::Reopen::default(), spool).expect("delivered");
            thread_cpu() - before
        });
        if spooled_in.is_none() {
            for b in all {
                tx.send(b.clone()).expect("sink running");
            }
        }
        drop(tx);
        let cpu = thread.join().expect("sink thread");
        while received.load(Ordering::Relaxed) < EVENTS as u64 {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "the receiver never got them all"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        (started.elapsed(), cpu)
    }

    /// A TCP receiver counting octet-counted frames.
    fn syslog_receiver(count: Arc<AtomicU64>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let count = count.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::with_capacity(1 << 20, stream);
                    let mut len = Vec::new();
                    let mut msg = Vec::new();
                    loop {
                        len.clear();
                        if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                            return;
                        }
                        let n: usize = std::str::from_utf8(&len[..len.len() - 1])
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .expect("an octet count");
                        msg.resize(n, 0);
                        r.read_exact(&mut msg).expect("the message");
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        port
    }

    /// An HTTP server answering bulk requests as Elasticsearch does when all is stored.
    fn elastic_receiver(count: Arc<AtomicU64>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let count = count.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(stream.try_clone().expect("clone"));
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let (mut len, mut gzip) = (0usize, false);
                        loop {
                            let mut h = String::new();
                            r.read_line(&mut h).expect("header");
                            let h = h.trim_end().to_ascii_lowercase();
                            if h.is_empty() {
                                break;
                            }
                            if let Some(v) = h.strip_prefix("content-length:") {
                                len = v.trim().parse().expect("length");
                            }
                            gzip |= h == "content-encoding: gzip";
                        }
                        let mut body = vec![0u8; len];
                        r.read_exact(&mut body).expect("body");
                        let mut plain = Vec::new();
                        if gzip {
                            flate2::read::GzDecoder::new(&body[..])
                                .read_to_end(&mut plain)
                                .expect("gzip");
                        } else {
                            plain = body;
                        }
                        let items = plain.iter().filter(|b| **b == b'\n').count() / 2;
                        let one = r#"{"create":{"status":201}}"#;
                        let answer = format!(
                            r#"{{"took":1,"errors":false,"items":[{}]}}"#,
                            vec![one; items].join(",")
                        );
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        stream.write_all(reply.as_bytes()).expect("reply");
                        count.fetch_add(items as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        port
    }

    fn config(name: &str, kind: SinkKind) -> SinkConfig {
        SinkConfig {
            name: name.into(),
            kind,
            spool: Spool::default(),
        }
    }

    fn http(port: u16, gzip: bool) -> Http {
        Http {
            url: format!("http://127.0.0.1:{port}"),
            index: Some("logs-fim.file-default".into()),
            token: None,
            batch_events: 500,
            batch_wait: Duration::from_millis(200),
            gzip,
            tls: Tls::default(),
        }
    }

    pub fn main() {
        let dir = std::env::temp_dir().join(format!("fim-sink-speed-{}", std::process::id()));
        let state = dir.join("state");
        std::fs::create_dir_all(&state).expect("temp dir");
        let stamped = batches();
        let (all, [render, cef, spool]) = render_and_spool(&stamped, &state);
        println!("{EVENTS} events in batches of {BATCH}");
        let per_event = |d: Duration| d.as_secs_f64() * 1e6 / EVENTS as f64;
        println!(
            "once per event, shared by every sink: rendering {:.2} µs, its CEF line (when a sink sends CEF) {:.2} µs, outbox append and commit {:.2} µs: {:.0} events/s on one core for all three ({:.0} without CEF)",
            per_event(render),
            per_event(cef),
            per_event(spool),
            1e6 / (per_event(render) + per_event(cef) + per_event(spool)),
            1e6 / (per_event(render) + per_event(spool))
        );
        println!("each sink on its runner thread to a receiver on this host:");
        println!("{:<36} {:>12} {:>14}", "sink", "events/s", "CPU µs/event");
        let report = |label: &str, (wall, cpu): (Duration, Duration)| {
            println!(
                "{label:<36} {:>12.0} {:>14.2}",
                EVENTS as f64 / wall.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / EVENTS as f64
            );
        };
        // File: what was written is what the receiver has.
        let path = dir.join("events.json");
        let file = config(
            "file",
            SinkKind::File {
                path: path.clone(),
                max_size: None,
                keep: 1,
            },
        );
        let written = AtomicU64::new(EVENTS as u64);
        for (label, spooled) in [("file", None), ("file, from the spool", Some(&*state))] {
            let _ = std::fs::remove_file(&path);
            report(label, run(file.clone(), &written, &all, spooled));
            let lines = std::fs::read(&path)
                .map(|t| t.iter().filter(|b| **b == b'\n').count())
                .unwrap_or(0);
            assert_eq!(lines, EVENTS, "the file holds every event");
        }
        for (label, payload) in [
            ("syslog tcp, json", Payload::Json),
            ("syslog tcp, cef", Payload::Cef),
        ] {
            let count = Arc::new(AtomicU64::new(0));
            let port = syslog_receiver(count.clone());
            let sink = config(
                "syslog",
                SinkKind::Syslog(Syslog {
                    address: format!("127.0.0.1:{port}"),
                    transport: Transport::Tcp,
                    payload,
                    facility: 16,
                    app_name: "fim".into(),
                    tls: Tls::default(),
                }),
            );
            report(label, run(sink.clone(), &count, &all, None));
            count.store(0, Ordering::Relaxed);
            let label = format!("{label}, from the spool");
            report(&label, run(sink, &count, &all, Some(&state)));
        }
        for (label, gzip) in [
            ("elasticsearch, gzip", true),
            ("elasticsearch, plain", false),
        ] {
            let count = Arc::new(AtomicU64::new(0));
            let port = elastic_receiver(count.clone());
            let sink = config("elastic", SinkKind::Elasticsearch(http(port, gzip)));
            report(label, run(sink.clone(), &count, &all, None));
            count.store(0, Ordering::Relaxed);
            let label = format!("{label}, from the spool");
            report(&label, run(sink, &count, &all, Some(&state)));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
