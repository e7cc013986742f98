//! Syslog messages (RFC 5424) and their framing over TCP and TLS (RFC 6587 octet counting,
//! RFC 5425), for the syslog sink. Pure: bytes in, bytes out.
//!
//! A message is `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`: no structured
//! data (the payload, JSON or CEF, carries everything, `event.id` included), no BOM (a CEF
//! collector looks for `CEF:` at the start of MSG, and a JSON parser for `{`).

use time::OffsetDateTime;

use crate::event::{Action, Stamped};

/// Syslog severities (RFC 5424).
pub mod severity {
    /// Critical conditions.
    pub const CRITICAL: u8 = 2;
    /// Error conditions.
    pub const ERROR: u8 = 3;
    /// Warning conditions.
    pub const WARNING: u8 = 4;
    /// Normal but significant.
    pub const NOTICE: u8 = 5;
    /// Informational.
    pub const INFO: u8 = 6;
}

/// The syslog severity of an event: from its rules' severity (critical 2, high 3,
/// medium 4, low 5), a gap or a rate limit's summary 4 (something was not seen or not
/// said), anything else 6.
pub fn severity_of(ev: &Stamped) -> u8 {
    if let Action::Gap | Action::Suppressed = ev.event.action() {
        return severity::WARNING;
    }
    match ev.rules.as_ref().map(|m| m.severity.ecs()) {
        Some(99) => severity::CRITICAL,
        Some(73) => severity::ERROR,
        Some(47) => severity::WARNING,
        Some(_) => severity::NOTICE,
        None => severity::INFO,
    }
}

/// What every message of one sender has in common.
#[derive(Clone, Debug)]
pub struct Sender {
    /// The facility (0..=23).
    pub facility: u8,
    /// HOSTNAME, already cleaned ([`header_field`]).
    pub hostname: String,
    /// APP-NAME, cleaned.
    pub app_name: String,
    /// PROCID: the daemon's pid.
    pub procid: u32,
}

impl Sender {
    /// A sender; its fields are cleaned for the header.
    pub fn new(facility: u8, hostname: &str, app_name: &str, procid: u32) -> Self {
        Self {
            facility: facility.min(23),
            hostname: header_field(hostname, 255),
            app_name: header_field(app_name, 48),
            procid,
        }
    }
}

/// A header field as RFC 5424 allows it: printable US-ASCII (33..=126), each other byte
/// `_`, at most `max` bytes, `-` (NILVALUE) when empty.
pub fn header_field(text: &str, max: usize) -> String {
    let cleaned: String = text
        .bytes()
        .take(max)
        .map(|b| {
            if (33..=126).contains(&b) {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "-".to_owned()
    } else {
        cleaned
    }
}

/// TIMESTAMP: UTC, at most 6 fraction digits (RFC 5424 allows no more).
pub fn timestamp(unix_ns: i128) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(unix_ns) else {
        return "-".to_owned();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Appends the message for `ev` with payload `msg` to `out`.
pub fn message(sender: &Sender, ev: &crate::outbox::Record, msg: &[u8], out: &mut Vec<u8>) {
    use std::io::Write as _;
    let pri = u16::from(sender.facility) * 8 + u16::from(ev.severity.min(7));
    let _ = write!(
        out,
        "<{pri}>1 {} {} {} {} {} - ",
        timestamp(ev.time_unix_ns),
        sender.hostname,
        sender.app_name,
        sender.procid,
        header_field(&ev.action, 32),
    );
    out.extend_from_slice(msg);
}

/// Appends `message` to `out` as one octet-counted frame (`LEN SP MSG`, RFC 6587 3.4.1).
pub fn frame(message: &[u8], out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = write!(out, "{} ", message.len());
    out.extend_from_slice(message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FileEvent, PathSource, ReportedPath, Stamper};

    #[test]
    fn a_message_has_every_header_field_and_a_frame_counts_its_bytes() {
        let mut ev = FileEvent::new(
            Action::CloseWrite,
            ReportedPath::new(b"/etc/x".to_vec(), PathSource::Scan),
            "test",
        );
        ev.time_unix_ns = 1_764_460_800_123_456_789;
        let stamped = Stamper::default().stamp(ev);
        let by = crate::ecs::Reporter::new("web-01".into(), None);
        let record = crate::outbox::Record::render(&stamped, &by).expect("renders");
        let sender = Sender::new(16, "web 01", "fim", 4242);
        let mut msg = Vec::new();
        message(&sender, &record, b"{\"a\":1}", &mut msg);
        assert_eq!(
            String::from_utf8(msg.clone()).expect("ASCII"),
            "<134>1 2025-11-30T00:00:00.123456Z web_01 fim 4242 close_write - {\"a\":1}"
        );
        let mut framed = Vec::new();
        frame(&msg, &mut framed);
        assert!(framed.starts_with(format!("{} <134>", msg.len()).as_bytes()));
        assert_eq!(framed.len(), msg.len() + format!("{} ", msg.len()).len());
    }

    #[test]
    fn header_fields_keep_printable_ascii_within_their_length() {
        assert_eq!(header_field("", 10), "-");
        assert_eq!(header_field("héllo wörld", 255), "h__llo_w__rld");
        assert_eq!(header_field(&"a".repeat(300), 255).len(), 255);
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000Z");
    }
}
