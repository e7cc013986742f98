//! A fresh Wine prefix, `wine reg` and `fim.exe` running in it, its events read as they
//! come. Every Wine call is bounded in time; the prefix's server is ended when the prefix
//! is dropped.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use serde_json::Value;

/// What the Wine tests run, built by `cargo xtask test`.
pub struct Kit {
    /// `fim.exe`.
    pub exe: PathBuf,
    /// The stand-in `bcryptprimitives.dll`.
    pub shim: PathBuf,
    /// `fimacl.exe`, which sets a key's or a file's owner and DACL.
    pub acl: PathBuf,
}

/// The kit, when Wine can run it. Outside CI a missing piece skips the test, saying why;
/// in CI it fails.
pub fn require_wine() -> Option<Kit> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.exists())
    };
    let wine = Command::new("wine")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let kit = match (var("FIM_EXE"), var("FIM_WINE_SHIM"), var("FIM_WINE_ACL")) {
        (Some(exe), Some(shim), Some(acl)) => Some(Kit { exe, shim, acl }),
        _ => None,
    };
    let why = match &kit {
        _ if !wine => "wine is not installed",
        None => {
            "FIM_EXE, FIM_WINE_SHIM and FIM_WINE_ACL do not name what `cargo xtask test` builds"
        }
        Some(_) => return kit,
    };
    if std::env::var_os("CI").is_some() {
        panic!("Wine test cannot run in CI: {why}");
    }
    eprintln!("skipping Wine test: {why}");
    None
}

/// A Wine prefix made for one test.
pub struct Prefix {
    dir: tempfile::TempDir,
}

impl Prefix {
    /// A new prefix (`wineboot --init`) with the stand-in DLL in its system32.
    pub fn new(shim: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fim-wine-")
            .tempdir()
            .expect("a temporary directory");
        let prefix = Self { dir };
        let out = prefix.run("wineboot", &["--init"], 180);
        assert!(
            out.status.success(),
            "wineboot: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::copy(shim, prefix.c("windows/system32/bcryptprimitives.dll"))
            .expect("copying the shim");
        prefix
    }

    /// `path` under the prefix's `C:` drive.
    pub fn c(&self, path: &str) -> PathBuf {
        self.dir.path().join("drive_c").join(path)
    }

    /// A Wine command with this prefix's environment.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("WINEPREFIX", self.dir.path())
            .env("WINEDEBUG", "-all")
            .env("LC_ALL", "C.UTF-8")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=");
        cmd
    }

    /// Runs `program args`, killed after `seconds`.
    pub fn run(&self, program: &str, args: &[&str], seconds: u32) -> Output {
        let mut cmd = self.command("timeout");
        cmd.arg(seconds.to_string()).arg(program).args(args);
        cmd.stdin(Stdio::null());
        cmd.output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"))
    }

    /// `wine PROGRAM ARGS`, which must succeed; what it printed.
    pub fn wine(&self, program: &Path, args: &[&str]) -> String {
        let mut cmd = self.command("timeout");
        cmd.arg("60")
            .arg("wine")
            .arg(program)
            .args(args)
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "wine {} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `wine reg ARGS`, which must succeed.
    pub fn reg(&self, args: &[&str]) {
        let mut all = vec!["reg"];
        all.extend_from_slice(args);
        let out = self.run("wine", &all, 60);
        assert!(
            out.status.success(),
            "wine reg {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let _ = self.run("wineserver", &["-k"], 30);
    }
}

/// `fim.exe run` in a prefix, and what it printed.
pub struct Fim {
    child: Child,
    lines: mpsc::Receiver<Value>,
    /// Every event read so far.
    pub seen: Vec<Value>,
    /// How many of `seen` a `wait_for` has passed.
    taken: usize,
    stderr: Arc<Mutex<String>>,
}

const READY: Duration = Duration::from_secs(120);
const DEADLINE: Duration = Duration::from_secs(60);

impl Fim {
    /// Starts `exe run ARGS` and waits for it to say it is ready.
    pub fn start(prefix: &Prefix, exe: &Path, args: &[&str]) -> Self {
        let mut cmd = prefix.command("wine");
        cmd.arg(exe).arg("run").args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting wine fim.exe");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(e) => eprintln!("fim.exe printed a line that is not JSON ({e}): {line}"),
                }
            }
        });
        let log = Arc::new(Mutex::new(String::new()));
        let writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = writer.lock().expect("log");
                l.push_str(&line);
                l.push('\n');
            }
        });
        let fim = Self {
            child,
            lines,
            seen: Vec::new(),
            taken: 0,
            stderr: log,
        };
        let start = Instant::now();
        while !fim.log().contains("ready: watching") {
            assert!(
                start.elapsed() < READY,
                "fim.exe not ready within {READY:?}; its log:\n{}",
                fim.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        fim
    }

    /// What fim.exe logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().expect("log").clone()
    }

    /// The next event (after those `wait_for` already returned or passed over) that `pred`
    /// accepts; panics with what was seen after the deadline.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        let mut at = self.taken;
        loop {
            while at < self.seen.len() {
                let v = &self.seen[at];
                at += 1;
                if pred(v) {
                    self.taken = at;
                    return v.clone();
                }
            }
            let left = DEADLINE.saturating_sub(start.elapsed());
            if left.is_zero() {
                let seen: Vec<String> = self.seen.iter().map(Value::to_string).collect();
                panic!(
                    "no event {what} within {DEADLINE:?}; saw:\n  {}\nlog:\n{}",
                    seen.join("\n  "),
                    self.log()
                );
            }
            if let Ok(v) = self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                self.seen.push(v);
            }
        }
    }

    /// Stops fim.exe as Ctrl-C does, and returns every event, its log and its status.
    pub fn stop(mut self) -> (Vec<Value>, String, ExitStatus) {
        // Wine turns SIGINT into a console Ctrl-C event for the program.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("waiting for fim.exe") {
                break s;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!(
                    "fim.exe did not stop within {DEADLINE:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(v) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(v);
        }
        (std::mem::take(&mut self.seen), self.log(), status)
    }
}
