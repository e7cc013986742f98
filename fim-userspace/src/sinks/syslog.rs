//! The syslog sink: RFC 5424 messages carrying the event's JSON document or its CEF line,
//! over TCP or TLS (octet-counted frames, RFC 6587 and 5425) or UDP (a datagram each).
//!
//! One connection, opened when first needed and again after it fails. Before each
//! delivery a stream connection is checked for a receiver that closed it (a restart), so
//! events are not written into a socket nobody reads; a write that fails drops the
//! connection and the runner delivers the same events again (at least once: a receiver may
//! get a message twice, with the same `event.id`, never lose one). A TLS 1.3 server that
//! refuses the client's certificate says so only after the handshake: the sink waits a
//! moment for that answer before it sends anything. UDP can lose messages silently; it is
//! there for receivers that take nothing else.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use fim_core::{
    config::{Payload, Syslog, Tls, Transport},
    ecs::Reporter,
    outbox::Record,
    wire::{
        cef,
        syslog::{Sender, frame, message},
    },
};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

use super::{Batch, Failure, Sink, SinkError};

/// How long connecting, and each write, may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames written this long before a connection was found closed are sent again on the
/// next one: a receiver that stops may not have read them.
const RESEND_WINDOW: Duration = Duration::from_secs(5);
/// At most this much is sent again.
const RESEND_BYTES: usize = 4 << 20;
/// How long a stopping sink waits for the receiver to close its side of the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long a new TLS connection waits for the server to refuse the client's certificate.
const TLS_VERDICT: Duration = Duration::from_millis(300);

enum Conn {
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Udp(UdpSocket),
}

/// One delivery written to the current connection.
struct Sent {
    at: Instant,
    frames: Vec<u8>,
    events: u64,
}

/// The sink.
pub struct SyslogSink {
    name: String,
    config: Syslog,
    sender: Sender,
    tls: Option<Arc<ClientConfig>>,
    conn: Option<Conn>,
    /// The frames (or, for UDP, the messages) of one delivery.
    out: Vec<u8>,
    json: Vec<u8>,
    msg: Vec<u8>,
    /// The frames of the latest deliveries on this connection, and when each was written.
    recent: std::collections::VecDeque<Sent>,
}

/// The TLS settings of `tls`: its CA file, else the system's roots; its client
/// certificate, when it has one.
fn tls_config(name: &str, tls: &Tls) -> Result<ClientConfig, SinkError> {
    let fail = |what: String, e: &dyn std::fmt::Display| SinkError::Setup {
        sink: name.to_owned(),
        what: format!("{what}: {e}"),
    };
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| fail(format!("reading the CA file `{}`", ca.display()), &e))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| fail(format!("reading the CA file `{}`", ca.display()), &e))?;
                roots
                    .add(cert)
                    .map_err(|e| fail(format!("using the CA file `{}`", ca.display()), &e))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| fail("setting up TLS".into(), &e))?
            .with_root_certificates(roots);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    fail(
                        format!("reading the client certificate `{}`", cert.display()),
                        &e,
                    )
                })?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| fail(format!("reading the client key `{}`", key.display()), &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| fail("using the client certificate".into(), &e))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

impl SyslogSink {
    /// A sink named `name` sending to `config.address`, for events `by` reports. Reads its
    /// certificates now: a missing or bad file stops the daemon at start.
    pub fn new(name: String, config: Syslog, by: Arc<Reporter>) -> Result<Self, SinkError> {
        let tls = match config.transport {
            Transport::Tls => Some(Arc::new(tls_config(&name, &config.tls)?)),
            _ => None,
        };
        let sender = Sender::new(
            config.facility,
            by.host_name(),
            &config.app_name,
            std::process::id(),
        );
        Ok(Self {
            name,
            config,
            sender,
            tls,
            conn: None,
            out: Vec::with_capacity(64 * 1024),
            json: Vec::with_capacity(4096),
            msg: Vec::with_capacity(4096),
            recent: std::collections::VecDeque::new(),
        })
    }

    /// Drops a stream connection the receiver closed (or broke) since the last delivery.
    fn drop_if_closed(&mut self) {
        let closed = match &mut self.conn {
            Some(Conn::Tcp(s)) => {
                let sock = s.try_clone();
                sock.is_ok_and(|sock| peer_closed(&sock, s))
            }
            Some(Conn::Tls(s)) => {
                let s = s.as_mut();
                let sock = s.sock.try_clone();
                sock.is_ok_and(|sock| peer_closed(&sock, s))
            }
            _ => false,
        };
        if closed {
            self.conn = None;
        }
    }

    fn connect(&mut self) -> Result<(), String> {
        let address = &self.config.address;
        let addrs: Vec<_> = address
            .to_socket_addrs()
            .map_err(|e| format!("resolving `{address}`: {e}"))?
            .collect();
        let Some(addr) = addrs.first().copied() else {
            return Err(format!("`{address}` resolves to no address"));
        };
        let conn = match self.config.transport {
            Transport::Udp => {
                let local = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let sock =
                    UdpSocket::bind(local).map_err(|e| format!("opening a UDP socket: {e}"))?;
                sock.connect(addr)
                    .map_err(|e| format!("connecting to {addr}: {e}"))?;
                Conn::Udp(sock)
            }
            Transport::Tcp => Conn::Tcp(tcp(addr)?),
            Transport::Tls => {
                let sock = tcp(addr)?;
                let host = address
                    .rsplit_once(':')
                    .map_or(address.as_str(), |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let server = ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("`{host}` is not a server name: {e}"))?;
                let config = self.tls.clone().ok_or("TLS is not set up")?;
                let conn = ClientConnection::new(config, server)
                    .map_err(|e| format!("starting TLS with {addr}: {e}"))?;
                let mut stream = StreamOwned::new(conn, sock);
                while stream.conn.is_handshaking() {
                    stream
                        .conn
                        .complete_io(&mut stream.sock)
                        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                }
                // TLS 1.3: a refused client certificate is an alert after the handshake.
                let _ = stream.sock.set_read_timeout(Some(TLS_VERDICT));
                let mut probe = [0u8; 1];
                match stream.read(&mut probe) {
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Ok(0) => return Err(format!("{addr} closed the TLS connection")),
                    Ok(_) => {}
                    Err(e) => return Err(format!("{addr} refused the TLS connection: {e}")),
                }
                let _ = stream.sock.set_read_timeout(None);
                Conn::Tls(Box::new(stream))
            }
        };
        self.conn = Some(conn);
        Ok(())
    }

    /// Keeps the frames of the delivery just written (`self.out[fresh..]`) among those a
    /// closed connection sends again, dropping what is older than [`RESEND_WINDOW`] or past
    /// [`RESEND_BYTES`].
    fn remember(&mut self, fresh: usize, events: u64) {
        if self.config.transport == Transport::Udp {
            return;
        }
        let now = Instant::now();
        self.recent.push_back(Sent {
            at: now,
            frames: self.out[fresh..].to_vec(),
            events,
        });
        let mut bytes: usize = self.recent.iter().map(|s| s.frames.len()).sum();
        while let Some(oldest) = self.recent.front() {
            if now.duration_since(oldest.at) <= RESEND_WINDOW && bytes <= RESEND_BYTES {
                break;
            }
            bytes -= oldest.frames.len();
            self.recent.pop_front();
        }
    }

    /// Closes a stream connection and waits (briefly) for the receiver to close its side,
    /// which it does once it has read everything: true if it did.
    fn close_cleanly(&mut self) -> bool {
        match self.conn.take() {
            Some(Conn::Tcp(mut s)) => {
                let _ = s.flush();
                s.shutdown(std::net::Shutdown::Write).is_ok()
                    && read_to_end(&s, &mut s.try_clone().ok())
            }
            Some(Conn::Tls(mut s)) => {
                s.conn.send_close_notify();
                let flushed = s.flush().is_ok();
                let sock = s.sock.try_clone().ok();
                flushed && sock.is_some_and(|sock| read_to_end(&sock, &mut Some(&mut *s)))
            }
            _ => false,
        }
    }

    /// The CEF payload of one event, in `self.json`.
    fn payload(&mut self, ev: &Record) -> std::io::Result<()> {
        self.json.clear();
        self.json
            .extend_from_slice(cef::from_json_at(&ev.doc, ev.time_unix_ns)?.as_bytes());
        Ok(())
    }
}

/// Reads `stream` (over `sock`) until the peer closes it, for at most [`CLOSE_WAIT`]:
/// true if it did.
fn read_to_end(sock: &TcpStream, stream: &mut Option<impl Read>) -> bool {
    let Some(stream) = stream.as_mut() else {
        return false;
    };
    let until = Instant::now() + CLOSE_WAIT;
    let mut buf = [0u8; 512];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if sock
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .is_err()
        {
            return false;
        }
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    false
}

/// Whether the peer behind `sock` closed the connection (or it broke), reading `stream`
/// (the socket itself, or TLS over it) without waiting. A syslog server sends nothing: a
/// byte read is as unexpected as the end.
fn peer_closed(sock: &TcpStream, stream: &mut impl Read) -> bool {
    if sock.set_nonblocking(true).is_err() {
        return true;
    }
    let mut probe = [0u8; 1];
    let closed = match stream.read(&mut probe) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = sock.set_nonblocking(false);
    closed
}

fn tcp(addr: std::net::SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    Ok(s)
}

impl Sink for SyslogSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn unconfirmed(&mut self, stopping: bool) -> u64 {
        if stopping && self.close_cleanly() {
            self.recent.clear();
        }
        self.recent.iter().map(|s| s.events).sum()
    }

    fn deliver(&mut self, batches: &[Batch]) -> Result<(), Failure> {
        self.drop_if_closed();
        let reconnected = self.conn.is_none();
        if reconnected {
            self.connect().map_err(Failure::Retry)?;
        }
        let udp = self.config.transport == Transport::Udp;
        self.out.clear();
        let mut datagrams: Vec<std::ops::Range<usize>> = Vec::new();
        // A connection the receiver closed may have dropped what was written last, unread:
        // that goes again on the new one (the receiver may then hold it twice, with the
        // same event.id; at least once is the promise).
        let resent: Vec<Sent> = if reconnected && !udp {
            self.recent.drain(..).collect()
        } else {
            Vec::new()
        };
        for s in &resent {
            self.out.extend_from_slice(&s.frames);
        }
        let fresh = self.out.len();
        let mut events = 0;
        for ev in batches.iter().flat_map(|b| b.iter()) {
            events += 1;
            self.msg.clear();
            if let (Payload::Cef, Some(line)) = (self.config.payload, ev.cef.as_deref()) {
                message(&self.sender, ev, line, &mut self.msg);
            } else if self.config.payload == Payload::Cef {
                self.payload(ev).map_err(|e| {
                    Failure::Fatal(SinkError::Io {
                        sink: self.name.clone(),
                        what: "rendering an event".into(),
                        source: e,
                    })
                })?;
                message(&self.sender, ev, &self.json, &mut self.msg);
            } else {
                message(&self.sender, ev, &ev.doc, &mut self.msg);
            }
            if udp {
                let start = self.out.len();
                self.out.extend_from_slice(&self.msg);
                datagrams.push(start..self.out.len());
            } else {
                frame(&self.msg, &mut self.out);
            }
        }
        let written = match self.conn.as_mut() {
            Some(Conn::Udp(s)) => datagrams
                .iter()
                .try_for_each(|r| s.send(&self.out[r.clone()]).map(|_| ())),
            Some(Conn::Tcp(s)) => s.write_all(&self.out).and_then(|()| s.flush()),
            Some(Conn::Tls(s)) => s.write_all(&self.out).and_then(|()| s.flush()),
            None => Ok(()),
        };
        match written {
            Ok(()) => {
                self.remember(fresh, events);
                Ok(())
            }
            Err(e) => {
                // What was taken from `recent` goes again with the next attempt.
                self.recent.extend(resent);
                self.conn = None;
                Err(Failure::Retry(format!(
                    "sending to {}: {e}",
                    self.config.address
                )))
            }
        }
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        // A clean TLS close: the receiver logs no truncated connection.
        if let Some(Conn::Tls(s)) = self.conn.as_mut() {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
}
