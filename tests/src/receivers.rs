//! Real receivers for the sink tests: rsyslog (Debian's, in the foreground, on ports of
//! its own), with a test CA and certificates made by `openssl`.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::scaled;

/// A CA, a server certificate for `localhost`, and a client certificate named
/// `fim-client`, all PEM, in `dir`.
pub struct Pki {
    /// The CA's certificate.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The client's certificate and key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running openssl (Debian's `openssl`): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// Makes the CA and both certificates in `dir`.
    pub fn make(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("pki dir");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-days",
            "2",
            "-subj",
            "/CN=fim test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &ca);
        for (name, cn, usage) in [
            ("server", "localhost", "serverAuth"),
            ("client", "fim-client", "clientAuth"),
        ] {
            let mut req = vec!["req"];
            req.extend(ec);
            let subj = format!("/CN={cn}");
            let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
            req.extend(["-subj", &subj, "-keyout", &key, "-out", &csr]);
            openssl(dir, &req);
            let ext = format!("{name}.ext");
            std::fs::write(
                dir.join(&ext),
                format!("subjectAltName=DNS:{cn}\nextendedKeyUsage={usage}\n"),
            )
            .expect("extensions");
            let pem = format!("{name}.pem");
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-out",
                    &pem,
                    "-extfile",
                    &ext,
                ],
            );
        }
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

/// Waits until something listens on 127.0.0.1:`port`; panics with `log()` at the deadline.
fn wait_listening(port: u16, what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on {port}: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines of `file` once it has `n` (or the deadline passed): a receiver writes what it
/// got within a second or so.
pub fn wait_lines(file: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    loop {
        let lines: Vec<String> = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= n || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1 (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An rsyslog listening on 127.0.0.1 for octet-counted (or LF-framed) syslog over plain
/// TCP and over TLS (the client must present a certificate of the test CA named
/// `fim-client`), writing each message it receives, as received, one per line, to
/// `plain.log` and `tls.log`.
pub struct Rsyslog {
    child: Option<Child>,
    conf: PathBuf,
    dir: PathBuf,
    /// The plain TCP port.
    pub tcp: u16,
    /// The TLS port.
    pub tls: u16,
    /// What arrived over TCP.
    pub plain_log: PathBuf,
    /// What arrived over TLS.
    pub tls_log: PathBuf,
    stderr: PathBuf,
}

impl Rsyslog {
    /// Starts rsyslog in `dir` with the server certificate of `pki`, and waits until it
    /// listens. In CI a missing rsyslog fails the test; outside it, `None` says why.
    pub fn start(dir: &Path, pki: &Pki) -> Option<Self> {
        let binary = Path::new("/usr/sbin/rsyslogd");
        let driver = Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so");
        if !binary.exists() || !driver.exists() {
            let why =
                "rsyslog and rsyslog-gnutls are not installed (`cargo xtask test` installs them)";
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("skipping: {why}");
            return None;
        }
        let work = dir.join("work");
        std::fs::create_dir_all(&work).expect("work dir");
        let (tcp, tls) = (free_port(), free_port());
        let (plain_log, tls_log) = (dir.join("plain.log"), dir.join("tls.log"));
        let conf = dir.join("rsyslog.conf");
        let p = |p: &Path| p.display().to_string();
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}" maxMessageSize="64k")
module(load="imtcp" maxSessions="100")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="plain") {{ action(type="omfile" file="{plain}" template="raw" flushOnTXEnd="on") }}
ruleset(name="tls") {{ action(type="omfile" file="{tlslog}" template="raw" flushOnTXEnd="on") }}
input(type="imtcp" port="{tcp}" address="127.0.0.1" ruleset="plain")
input(type="imtcp" port="{tls}" address="127.0.0.1" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1"
      streamDriver.authMode="x509/name" permittedPeer=["fim-client"]
      streamDriver.caFile="{ca}" streamDriver.certFile="{cert}" streamDriver.keyFile="{key}")
"#,
                work = p(&work),
                plain = p(&plain_log),
                tlslog = p(&tls_log),
                ca = p(&pki.ca),
                cert = p(&pki.server_cert),
                key = p(&pki.server_key),
            ),
        )
        .expect("rsyslog.conf");
        let mut r = Self {
            child: None,
            conf,
            dir: dir.to_owned(),
            tcp,
            tls,
            plain_log,
            tls_log,
            stderr: dir.join("rsyslogd.stderr"),
        };
        r.resume();
        Some(r)
    }

    /// Starts rsyslog again (after [`Rsyslog::stop`]) on the same ports and files, and waits
    /// until it listens.
    pub fn resume(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .expect("stderr file");
        let child = Command::new("/usr/sbin/rsyslogd")
            .args(["-n", "-f"])
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting rsyslogd");
        self.child = Some(child);
        for port in [self.tcp, self.tls] {
            wait_listening(port, "rsyslog", || self.log());
        }
    }

    /// Stops rsyslog as a service stop does (SIGTERM), and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// What rsyslog said on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One request an [`HttpReceiver`] got.
#[derive(Clone, Debug)]
pub struct Request {
    /// `POST /_bulk`.
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, gunzipped when it came with `Content-Encoding: gzip`.
    pub body: Vec<u8>,
}

impl Request {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 server on 127.0.0.1 that keeps every request and answers each with
/// what `answer` makes of it (status, JSON body).
pub struct HttpReceiver {
    /// Its port.
    pub port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
}

fn read_request(stream: &mut TcpStream) -> Option<Request> {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut raw = vec![0u8; len];
    reader.read_exact(&mut raw).ok()?;
    let gzip = headers
        .iter()
        .any(|(n, v)| n == "content-encoding" && v == "gzip");
    let body = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .expect("a gzip body");
        out
    } else {
        raw
    };
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

impl HttpReceiver {
    /// Starts the server; `answer` sees every request and the ones before it.
    pub fn start(answer: impl Fn(&Request, &[Request]) -> (u16, String) + Send + 'static) -> Self {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Request>::new()));
        let kept = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                // Keep-alive: one request after another on the connection.
                while let Some(request) = read_request(&mut stream) {
                    let (status, body) = {
                        let mut all = kept.lock().expect("lock");
                        let answered = answer(&request, &all);
                        all.push(request);
                        answered
                    };
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        });
        Self { port, requests }
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }
}

/// Debian's syslog-ng, unpacked by `cargo xtask test` (it conflicts with rsyslog), listening
/// on 127.0.0.1 for RFC 5424 over TCP with octet-counted frames only (a frame it cannot read
/// is dropped and logged), writing each message as received to `raw.log`.
pub struct SyslogNg {
    child: Child,
    /// Its TCP port.
    pub tcp: u16,
    /// What arrived.
    pub raw_log: PathBuf,
    stderr: PathBuf,
}

impl SyslogNg {
    /// Starts syslog-ng in `dir` and waits until it listens. In CI a missing syslog-ng
    /// fails the test; outside it, `None` says why.
    pub fn start(dir: &Path) -> Option<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/receivers/syslog-ng");
        let binary = root.join("usr/sbin/syslog-ng");
        let libs = root.join("usr/lib/syslog-ng");
        // The modules are in a directory named by the version (3.38, 4.8, ...).
        let modules = std::fs::read_dir(&libs).ok().and_then(|entries| {
            entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(char::is_numeric))
            })
        });
        let (true, Some(modules)) = (binary.exists(), modules) else {
            let why = format!(
                "syslog-ng is not unpacked at {} (`cargo xtask test` does it)",
                root.display()
            );
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("skipping: {why}");
            return None;
        };
        std::fs::create_dir_all(dir).expect("syslog-ng dir");
        let tcp = free_port();
        let raw_log = dir.join("raw.log");
        let conf = dir.join("syslog-ng.conf");
        std::fs::write(
            &conf,
            format!(
                "@version: current\n\
                 options {{ keep-hostname(yes); keep-timestamp(yes); log-msg-size(65536); stats-freq(0); }};\n\
                 source s_tcp {{ syslog(transport(\"tcp\") ip(\"127.0.0.1\") port({tcp}) flags(store-raw-message)); }};\n\
                 destination d_raw {{ file(\"{raw}\" template(\"$RAWMSG\\n\")); }};\n\
                 log {{ source(s_tcp); destination(d_raw); }};\n",
                raw = raw_log.display()
            ),
        )
        .expect("syslog-ng.conf");
        let stderr = dir.join("syslog-ng.stderr");
        let child = Command::new(&binary)
            .env("LD_LIBRARY_PATH", &libs)
            .arg("-F")
            .arg("-e")
            .arg("-f")
            .arg(&conf)
            .arg(format!("--module-path={}", modules.display()))
            .arg(format!("--pidfile={}", dir.join("sng.pid").display()))
            .arg(format!(
                "--persist-file={}",
                dir.join("sng.persist").display()
            ))
            .arg(format!("--control={}", dir.join("sng.ctl").display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("starting syslog-ng");
        let s = Self {
            child,
            tcp,
            raw_log,
            stderr,
        };
        wait_listening(tcp, "syslog-ng", || s.log());
        Some(s)
    }

    /// What syslog-ng said on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for SyslogNg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on `127.0.0.1:port` over HTTP/1.0: the status and the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// `text` percent-encoded for a URL's query.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Debian's Prometheus, scraping one target every second as job `fim`.
pub struct Prometheus {
    child: std::process::Child,
    /// Its web port (the query API).
    pub port: u16,
    stderr: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus in `dir`, scraping `127.0.0.1:target` every second, and waits until
    /// it answers. In CI a missing Prometheus fails the test; outside it, `None` says why.
    pub fn start(dir: &Path, target: u16) -> Option<Self> {
        let binary = Path::new("/usr/bin/prometheus");
        if !binary.exists() {
            let why = "prometheus is not installed (`cargo xtask test` installs it)";
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("skipping: {why}");
            return None;
        }
        let conf = dir.join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: fim\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n\
                 \x20   static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .expect("prometheus.yml");
        let port = free_port();
        let stderr = dir.join("prometheus.stderr");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("starting prometheus");
        let p = Self {
            child,
            port,
            stderr,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while http_get(port, "/-/ready").map(|(s, _)| s).ok() != Some(200) {
            assert!(
                std::time::Instant::now() < deadline,
                "prometheus did not become ready:\n{}",
                p.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Some(p)
    }

    /// The instant vector `promql` evaluates to now: each series' labels and value.
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = http_get(self.port, &path).expect("querying prometheus");
        let answer: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("prometheus answered {status} {body:?}: {e}"));
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        answer["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| {
                        let value = s["value"][1]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(f64::NAN);
                        (s["metric"].clone(), value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The one value `promql` evaluates to (`None`: no series).
    pub fn value(&self, promql: &str) -> Option<f64> {
        let got = self.query(promql);
        assert!(got.len() <= 1, "{promql}: {got:?}");
        got.first().map(|(_, v)| *v)
    }

    /// Waits until `promql` evaluates to `want`, up to `timeout`; the last value.
    pub fn wait_for(&self, promql: &str, want: f64, timeout: std::time::Duration) -> Option<f64> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let got = self.value(promql);
            if got == Some(want) || std::time::Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// What Prometheus said on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
