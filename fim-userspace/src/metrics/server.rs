//! The endpoint's HTTP server: `GET /metrics`, `/health`, `/ready`, one request per
//! connection (HTTP/1.0 and 1.1, `Connection: close`), on a thread of its own
//! ([`start`]): what its clients do never holds the sensor's thread, and it answers while
//! the daemon starts (`/ready`: 503).
//!
//! A scraper's request is small and its answer a few KiB: a request's head is read up to
//! [`MAX_REQUEST`] bytes within [`HEAD_TIMEOUT`], the whole exchange within
//! [`REQUEST_TIMEOUT`], at most [`MAX_CONNECTIONS`] at once (more are answered 503 at
//! once); anything else is answered with an error or dropped, never waited on.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use log::{debug, info, warn};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;

use super::Endpoint;

/// Bytes of a request read at most (request line and headers; bodies are not read).
const MAX_REQUEST: usize = 8 << 10;
/// How long a client may take to send its request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may take to send its request and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("the metrics endpoint cannot listen on {address} ([metrics] address): {source}")]
pub struct BindError {
    /// Where it was to listen.
    pub address: SocketAddr,
    /// Why not.
    pub source: std::io::Error,
}

/// Listens on `address` and serves `endpoint` on a thread of its own until `shutdown` (a
/// taken port stops the daemon at start, with this error).
pub fn start(
    address: SocketAddr,
    endpoint: Arc<Endpoint>,
    shutdown: CancellationToken,
) -> Result<(), BindError> {
    let fail = |source| BindError { address, source };
    let listener = std::net::TcpListener::bind(address).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    std::thread::Builder::new()
        .name("fim-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, endpoint, shutdown).await,
                    Err(e) => warn!("metrics: {e}"),
                }
            });
        })
        .map_err(fail)?;
    Ok(())
}

/// Serves `endpoint` on `listener` until `shutdown`.
async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>, shutdown: CancellationToken) {
    if let Ok(address) = listener.local_addr() {
        info!("metrics: http://{address}/metrics, /health, /ready");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, most likely: pause rather than spin.
                warn!("metrics: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!("metrics: {peer}: {MAX_CONNECTIONS} connections already: busy");
            let _ = stream.try_write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            continue;
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &endpoint))
                .await
                .is_err()
            {
                debug!("metrics: {peer}: too slow, dropped");
            }
            drop(slot);
        });
    }
}

/// What a request asked: its method and path (without a query).
fn parse_request(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or(target)))
}

/// The status, content type and body for `method` `path`.
fn respond(endpoint: &Endpoint, method: &str, path: &str) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return (405, TEXT, "only GET and HEAD\n".into());
    }
    match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            endpoint.metrics(),
        ),
        "/health" | "/healthz" => {
            let v = endpoint.verdict();
            if v.healthy {
                (200, TEXT, "healthy\n".into())
            } else {
                (503, TEXT, format!("unhealthy: {}\n", v.problems.join("; ")))
            }
        }
        "/ready" | "/readyz" => {
            let v = endpoint.verdict();
            if v.ready {
                (200, TEXT, "ready\n".into())
            } else {
                (
                    503,
                    TEXT,
                    format!("not ready: {}\n", v.waiting_for.join("; ")),
                )
            }
        }
        "/" => (
            200,
            TEXT,
            "fim: /metrics (Prometheus), /health, /ready\n".into(),
        ),
        _ => (404, TEXT, "not found: /metrics, /health, /ready\n".into()),
    }
}

/// Reads a request's head (up to its blank line) into `head`: whether it is whole.
async fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        // Only what came now (and the three bytes before it) can end the head.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        let tail = &head[from..];
        if tail.windows(4).any(|w| w == b"\r\n\r\n") || tail.windows(2).any(|w| w == b"\n\n") {
            return true;
        }
        if head.len() >= MAX_REQUEST {
            return false;
        }
    }
}

async fn answer(mut stream: TcpStream, endpoint: &Endpoint) {
    let mut head = Vec::with_capacity(512);
    let complete = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream, &mut head))
        .await
        .unwrap_or(false);
    let (status, kind, body, head_only) = match parse_request(&head) {
        Some((method, path)) if complete => {
            let (status, kind, body) = respond(endpoint, method, path);
            (status, kind, body, method == "HEAD")
        }
        _ if head.is_empty() => return,
        _ => (
            400,
            "text/plain; charset=utf-8",
            "bad request\n".to_owned(),
            false,
        ),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&body);
    }
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_by_method_and_path_only() {
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            parse_request(b"HEAD /ready HTTP/1.0\n\n"),
            Some(("HEAD", "/ready"))
        );
        assert_eq!(parse_request(b"GET /metrics\r\n\r\n"), None, "HTTP/0.9");
        assert_eq!(parse_request(b"\x16\x03\x01 binary"), None, "TLS hello");
    }
}
