//! The HTTP sinks: Elasticsearch's `_bulk` API, Splunk's HTTP Event Collector, and a JSON
//! webhook. Each delivery is sent in requests of at most `batch_events` events, gzipped
//! unless told not to.
//!
//! What a failure means follows the receiver's answer ([`fim_core::wire`]): a receiver
//! that is down, busy or erring on its side is asked again later with the same events;
//! one that refuses an event for good (a mapping conflict, an invalid field) has it logged
//! and counted, not retried. Events a receiver already took are not sent again: the sink
//! remembers how far a delivery got, and Elasticsearch, which gets `event.id` as `_id`,
//! answers a resent event with 409, which counts as stored. A receiver that answers that a
//! request is too large (HTTP 413) gets requests half the size from then on; an event too
//! large on its own is refused.

use std::{io::Write, sync::Arc, time::Duration};

use fim_core::{
    config::{Http, Secret, Tls},
    ecs::Reporter,
    outbox::Record,
    wire::{elastic, splunk},
};
use log::warn;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use super::{Batch, Failure, Sink, SinkError};

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The API a sink speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `POST URL/_bulk`, NDJSON.
    Elasticsearch,
    /// `POST URL/services/collector/event`, one JSON object per event.
    SplunkHec,
    /// `POST URL`, a JSON array of documents.
    Webhook,
}

/// The sink.
pub struct HttpSink {
    name: String,
    api: Api,
    endpoint: String,
    /// The `Authorization` header, secret included (never logged).
    authorization: Option<String>,
    index: Option<String>,
    batch_events: usize,
    batch_wait: Duration,
    gzip: bool,
    agent: ureq::Agent,
    by: Arc<Reporter>,
    /// The first event of the delivery in progress, how many of its events the receiver
    /// already took, and which of those it refused: a retry of the same delivery goes on
    /// from there.
    progress: Option<(uuid::Uuid, usize, Vec<String>)>,
    /// Events in one request, at most: `batch_events`, halved each time the receiver
    /// answers that a request is too large (HTTP 413).
    request_events: usize,
    body: Vec<u8>,
}

/// What became of one request.
enum Sent {
    /// The receiver settled its first `settled` events (took them, or refused those in
    /// `refused` for good, each with why); the rest go in the next request.
    Settled {
        settled: usize,
        refused: Vec<String>,
    },
    /// HTTP 413: the request was larger than the receiver takes, and nothing was taken.
    TooLarge,
}

/// The value of `secret`.
pub fn reveal(secret: &Secret) -> Result<String, String> {
    match secret {
        Secret::Inline(v) => Ok(v.clone()),
        Secret::File(p) => std::fs::read_to_string(p)
            .map(|t| t.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| format!("reading the secret file `{}`: {e}", p.display())),
        Secret::Env(var) => {
            std::env::var(var).map_err(|_| format!("the environment variable `{var}` is not set"))
        }
    }
}

fn tls_config(tls: &Tls) -> Result<TlsConfig, String> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("reading `{}`: {e}", p.display()))
    };
    let mut builder = TlsConfig::builder();
    if let Some(ca) = &tls.ca_file {
        let pem = read(ca)?;
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!("`{}` holds no certificate", ca.display()));
        }
        builder = builder.root_certs(RootCerts::new_with_certs(&certs));
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let pem = read(cert)?;
        let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        let key = PrivateKey::from_pem(&read(key)?)
            .map_err(|e| format!("reading the client key `{}`: {e}", key.display()))?;
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(builder.build())
}

impl HttpSink {
    /// A sink named `name` speaking `api` to `config.url`. Reads its secret and
    /// certificates now: a missing one stops the daemon at start.
    pub fn new(
        name: String,
        api: Api,
        config: &Http,
        by: Arc<Reporter>,
    ) -> Result<Self, SinkError> {
        let fail = |what: String| SinkError::Setup {
            sink: name.clone(),
            what,
        };
        let secret = config
            .token
            .as_ref()
            .map(reveal)
            .transpose()
            .map_err(&fail)?;
        let authorization = secret.map(|s| match api {
            Api::Elasticsearch => format!("ApiKey {s}"),
            Api::SplunkHec => format!("Splunk {s}"),
            Api::Webhook => format!("Bearer {s}"),
        });
        let base = config.url.trim_end_matches('/');
        let endpoint = match api {
            Api::Elasticsearch => format!("{base}/_bulk"),
            Api::SplunkHec => format!("{base}/services/collector/event"),
            Api::Webhook => config.url.clone(),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls_config(&config.tls).map_err(&fail)?)
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        Ok(Self {
            name,
            api,
            endpoint,
            authorization,
            index: config.index.clone(),
            batch_events: config.batch_events.max(1),
            request_events: config.batch_events.max(1),
            batch_wait: config.batch_wait,
            gzip: config.gzip,
            agent,
            by,
            progress: None,
            body: Vec::with_capacity(256 * 1024),
        })
    }

    /// The body for `events`, in `self.body`.
    fn build_body(&mut self, events: &[&Record]) -> std::io::Result<()> {
        self.body.clear();
        if self.api == Api::Webhook {
            self.body.push(b'[');
        }
        for (i, ev) in events.iter().enumerate() {
            match self.api {
                Api::Elasticsearch => elastic::push(
                    self.index.as_deref().unwrap_or("logs-fim.file-default"),
                    &ev.id.hyphenated().to_string(),
                    &ev.doc,
                    &mut self.body,
                ),
                Api::SplunkHec => splunk::push(
                    ev.time_unix_ns,
                    self.by.host_name(),
                    self.index.as_deref(),
                    &ev.doc,
                    &mut self.body,
                ),
                Api::Webhook => {
                    if i > 0 {
                        self.body.push(b',');
                    }
                    self.body.extend_from_slice(&ev.doc);
                }
            }
        }
        if self.api == Api::Webhook {
            self.body.push(b']');
        }
        Ok(())
    }

    /// Sends `self.body`; the HTTP status and the answer's text.
    fn post(&self) -> Result<(u16, String), String> {
        let content_type = match self.api {
            Api::Elasticsearch => "application/x-ndjson",
            _ => "application/json",
        };
        let mut request = self
            .agent
            .post(&self.endpoint)
            .header("Content-Type", content_type)
            .header("Accept", "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let sent = if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(self.body.len() / 4),
                flate2::Compression::fast(),
            );
            gz.write_all(&self.body)
                .and_then(|()| gz.finish())
                .map_err(|e| format!("compressing: {e}"))
                .and_then(|bytes| {
                    request
                        .header("Content-Encoding", "gzip")
                        .send(&bytes[..])
                        .map_err(|e| e.to_string())
                })
        } else {
            request.send(&self.body[..]).map_err(|e| e.to_string())
        };
        let mut response = sent.map_err(|e| format!("POST {}: {e}", self.endpoint))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Ok((status, text))
    }

    /// Sends `events` in one request: what the receiver settled, or why to try again.
    fn send(&mut self, events: &[&Record]) -> Result<Sent, Failure> {
        let fatal = |name: &str, e| {
            Failure::Fatal(SinkError::Io {
                sink: name.to_owned(),
                what: "rendering events".into(),
                source: e,
            })
        };
        self.build_body(events).map_err(|e| fatal(&self.name, e))?;
        let (status, text) = self.post().map_err(Failure::Retry)?;
        if status == 413 {
            return Ok(Sent::TooLarge);
        }
        let all = |refused| Sent::Settled {
            settled: events.len(),
            refused,
        };
        let each = |why: &str| -> Vec<String> {
            events
                .iter()
                .map(|e| format!("event {}: {why}", e.id))
                .collect()
        };
        match self.api {
            Api::Elasticsearch => match elastic::answer(status, &text, events.len()) {
                elastic::Answer::Retry(why) => Err(Failure::Retry(why)),
                elastic::Answer::Refused(why) => Ok(all(each(&why))),
                elastic::Answer::Items(items) => {
                    // A retry resends them all: the stored ones answer 409.
                    if let Some(elastic::Item::Retry(why)) =
                        items.iter().find(|i| matches!(i, elastic::Item::Retry(_)))
                    {
                        return Err(Failure::Retry(why.clone()));
                    }
                    Ok(all(items
                        .into_iter()
                        .zip(events)
                        .filter_map(|(item, ev)| match item {
                            elastic::Item::Refused(why) => Some(format!("event {}: {why}", ev.id)),
                            _ => None,
                        })
                        .collect()))
                }
            },
            Api::SplunkHec => match splunk::answer(status, &text) {
                splunk::Answer::Indexed => Ok(all(Vec::new())),
                splunk::Answer::Retry(why) => Err(Failure::Retry(why)),
                splunk::Answer::Refused(why) => Ok(all(each(&why))),
                // Those before it are indexed, it is refused; the rest go in the next
                // request (HEC does not deduplicate: they must not be sent again).
                splunk::Answer::RefusedAt(n, why) if n < events.len() => Ok(Sent::Settled {
                    settled: n + 1,
                    refused: vec![format!("event {}: {why}", events[n].id)],
                }),
                splunk::Answer::RefusedAt(_, why) => Ok(all(each(&why))),
            },
            Api::Webhook => match status {
                200..=299 => Ok(all(Vec::new())),
                s if elastic::retryable(s) => Err(Failure::Retry(format!("HTTP {s}"))),
                s => Ok(all(each(&format!(
                    "HTTP {s}: {}",
                    text.chars().take(300).collect::<String>()
                )))),
            },
        }
    }
}

impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn batching(&self) -> Option<(usize, Duration)> {
        Some((self.batch_events, self.batch_wait))
    }

    fn deliver(&mut self, batches: &[Batch]) -> Result<(), Failure> {
        let events: Vec<&Record> = batches.iter().flat_map(|b| b.iter()).collect();
        let Some(first) = events.first().map(|e| e.id) else {
            return Ok(());
        };
        let (mut done, mut refused) = match self.progress.take() {
            Some((id, done, refused)) if id == first => (done, refused),
            _ => (0, Vec::new()),
        };
        while done < events.len() {
            let end = (done + self.request_events).min(events.len());
            let chunk: Vec<&Record> = events[done..end].to_vec();
            match self.send(&chunk) {
                Ok(Sent::Settled {
                    settled,
                    refused: r,
                }) => {
                    refused.extend(r);
                    done += settled.max(1);
                }
                Ok(Sent::TooLarge) if chunk.len() > 1 => {
                    self.request_events = chunk.len() / 2;
                    warn!(
                        "sink {}: the receiver takes no request of {} events (HTTP 413): sending at most {} per request from now on",
                        self.name,
                        chunk.len(),
                        self.request_events
                    );
                }
                Ok(Sent::TooLarge) => {
                    refused.push(format!(
                        "event {}: HTTP 413: larger than the receiver takes on its own",
                        chunk[0].id
                    ));
                    done += 1;
                }
                Err(e) => {
                    self.progress = Some((first, done, refused));
                    return Err(e);
                }
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(Failure::Refused {
                events: refused.len() as u64,
                why: refused.join("; "),
            })
        }
    }
}
