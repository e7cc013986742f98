//! Splunk's HTTP Event Collector (`/services/collector/event`): the body for a batch of
//! events (one JSON object each, one after another, not an array) and what its answer says.

use serde_json::Value;

/// Appends one event to a HEC body: `{"time":…,"host":…,"source":"fim","sourcetype":"_json",
/// ["index":…,] "event":DOCUMENT}` and a newline. `time` is seconds with milliseconds.
pub fn push(time_unix_ns: i128, host: &str, index: Option<&str>, json: &[u8], body: &mut Vec<u8>) {
    use std::io::Write as _;
    let millis = time_unix_ns.div_euclid(1_000_000);
    let _ = write!(
        body,
        "{{\"time\":{}.{:03},\"host\":{},\"source\":\"fim\",\"sourcetype\":\"_json\",",
        millis.div_euclid(1000),
        millis.rem_euclid(1000),
        Value::String(host.to_owned()),
    );
    if let Some(index) = index {
        let _ = write!(body, "\"index\":{},", Value::String(index.to_owned()));
    }
    body.extend_from_slice(b"\"event\":");
    body.extend_from_slice(json);
    body.extend_from_slice(b"}\n");
}

/// What a HEC answer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Every event indexed.
    Indexed,
    /// Worth sending again (server busy, internal error, HTTP 429/5xx).
    Retry(String),
    /// Event `index` (0-based) was refused for good; those before it were indexed, those
    /// after it were not looked at.
    RefusedAt(usize, String),
    /// The whole request was refused for good (a malformed request).
    Refused(String),
}

/// Reads the answer to a HEC request: HTTP `status` and `body`.
pub fn answer(status: u16, body: &str) -> Answer {
    let doc: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = doc["code"].as_u64();
    let text = doc["text"]
        .as_str()
        .unwrap_or(body)
        .chars()
        .take(300)
        .collect::<String>();
    let why = format!(
        "HTTP {status}, code {}: {text}",
        code.map_or("-".into(), |c| c.to_string())
    );
    match (status, code) {
        (200..=299, Some(0) | None) => Answer::Indexed,
        // Server busy, internal error; a token missing, invalid or disabled, which the
        // operator fixes while the events wait.
        (_, Some(1..=4 | 8 | 9)) => Answer::Retry(why),
        (429 | 500..=599, _) => Answer::Retry(why),
        // Invalid data format, or an event field: the event named is refused.
        (_, Some(6 | 12 | 13 | 15)) => match doc["invalid-event-number"].as_u64() {
            Some(n) => Answer::RefusedAt(n as usize, why),
            None => Answer::Refused(why),
        },
        _ => Answer::Refused(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_an_object_with_its_time_in_seconds() {
        let mut body = Vec::new();
        push(
            1_764_460_800_123_456_789,
            "web \"1\"",
            Some("fim"),
            br#"{"a":1}"#,
            &mut body,
        );
        assert_eq!(
            String::from_utf8(body).expect("UTF-8"),
            "{\"time\":1764460800.123,\"host\":\"web \\\"1\\\"\",\"source\":\"fim\",\
             \"sourcetype\":\"_json\",\"index\":\"fim\",\"event\":{\"a\":1}}\n"
        );
    }

    #[test]
    fn answers_say_what_to_do() {
        assert_eq!(
            answer(200, r#"{"text":"Success","code":0}"#),
            Answer::Indexed
        );
        assert!(matches!(
            answer(503, r#"{"text":"Server is busy","code":9}"#),
            Answer::Retry(_)
        ));
        assert!(matches!(
            answer(403, r#"{"text":"Invalid token","code":4}"#),
            Answer::Retry(_)
        ));
        assert!(matches!(
            answer(400, r#"{"text":"No data","code":5}"#),
            Answer::Refused(_)
        ));
        assert!(matches!(
            answer(
                400,
                r#"{"text":"Invalid data format","code":6,"invalid-event-number":2}"#
            ),
            Answer::RefusedAt(2, _)
        ));
    }
}
