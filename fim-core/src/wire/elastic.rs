//! Elasticsearch's `_bulk` API: the body for a batch of events, and what its answer says
//! about each of them.
//!
//! Every event is a `create` with `_id` = `event.id`: a data stream takes only `create`,
//! and a retry after a lost answer is then harmless (the events already stored answer 409,
//! which counts as delivered).

use serde_json::Value;

/// Appends one event to a bulk body: the action line, then the document (`json`, one line
/// without its newline).
pub fn push(index: &str, id: &str, json: &[u8], body: &mut Vec<u8>) {
    let action = serde_json::json!({"create": {"_index": index, "_id": id}});
    // A map of two strings always serializes.
    let _ = serde_json::to_writer(&mut *body, &action);
    body.push(b'\n');
    body.extend_from_slice(json);
    body.push(b'\n');
}

/// What became of one event of a bulk request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Stored (or stored by an earlier attempt: 409 on `create` with our `_id`).
    Stored,
    /// Worth sending again (429, 5xx).
    Retry(String),
    /// Refused for good (a mapping error, a missing privilege): `type: reason`.
    Refused(String),
}

/// What a bulk answer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// One entry per event, in request order.
    Items(Vec<Item>),
    /// The whole request failed and is worth sending again (HTTP 429, 5xx).
    Retry(String),
    /// The whole request was refused (a malformed body): sending it again gives the same
    /// answer. Bad credentials and a missing index are a [`Answer::Retry`]: the events
    /// wait until the operator fixes them.
    Refused(String),
}

/// Whether an HTTP status is worth a retry.
pub fn retryable(status: u16) -> bool {
    status == 429 || status == 408 || status >= 500
}

/// Reads the answer to a bulk request of `events` events: HTTP `status` and `body`.
pub fn answer(status: u16, body: &str, events: usize) -> Answer {
    let short = |b: &str| b.chars().take(300).collect::<String>();
    // Bad credentials or a missing index are fixed by the operator: the events wait.
    if retryable(status) || matches!(status, 401 | 403 | 404) {
        return Answer::Retry(format!("HTTP {status}: {}", short(body)));
    }
    if !(200..300).contains(&status) {
        return Answer::Refused(format!("HTTP {status}: {}", short(body)));
    }
    let Ok(doc) = serde_json::from_str::<Value>(body) else {
        return Answer::Retry(format!("an answer that is not JSON: {}", short(body)));
    };
    let Some(items) = doc["items"].as_array() else {
        return Answer::Retry(format!("an answer without items: {}", short(body)));
    };
    if items.len() != events {
        return Answer::Retry(format!(
            "{} items answered for {events} events",
            items.len()
        ));
    }
    Answer::Items(
        items
            .iter()
            .map(|item| {
                // `{"create": {...}}`: the one key is the action.
                let result = item
                    .as_object()
                    .and_then(|o| o.values().next())
                    .unwrap_or(&Value::Null);
                let status = result["status"].as_u64().unwrap_or(0) as u16;
                let why = || {
                    format!(
                        "{status} {}: {}",
                        result["error"]["type"].as_str().unwrap_or("error"),
                        result["error"]["reason"].as_str().unwrap_or("")
                    )
                };
                match status {
                    200..=299 | 409 => Item::Stored,
                    s if retryable(s) => Item::Retry(why()),
                    _ => Item::Refused(why()),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_pairs_of_lines_ending_with_a_newline() {
        let mut body = Vec::new();
        push("logs-fim.file-default", "id-1", br#"{"a":1}"#, &mut body);
        push("logs-fim.file-default", "id-2", br#"{"a":2}"#, &mut body);
        assert_eq!(
            String::from_utf8(body).expect("UTF-8"),
            "{\"create\":{\"_id\":\"id-1\",\"_index\":\"logs-fim.file-default\"}}\n{\"a\":1}\n\
             {\"create\":{\"_id\":\"id-2\",\"_index\":\"logs-fim.file-default\"}}\n{\"a\":2}\n"
        );
    }

    #[test]
    fn each_item_is_stored_retried_or_refused_and_409_counts_as_stored() {
        let body = r#"{"took":3,"errors":true,"items":[
            {"create":{"_id":"a","status":201}},
            {"create":{"_id":"b","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"_id":"c","status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
            {"create":{"_id":"d","status":400,"error":{"type":"document_parsing_exception","reason":"bad field"}}}]}"#;
        assert_eq!(
            answer(200, body, 4),
            Answer::Items(vec![
                Item::Stored,
                Item::Stored,
                Item::Retry("429 es_rejected_execution_exception: busy".into()),
                Item::Refused("400 document_parsing_exception: bad field".into()),
            ])
        );
        assert!(matches!(answer(503, "down", 4), Answer::Retry(_)));
        assert!(matches!(answer(401, "no", 4), Answer::Retry(_)));
        assert!(matches!(answer(400, "bad", 4), Answer::Refused(_)));
        assert!(matches!(answer(200, "{}", 4), Answer::Retry(_)));
        assert!(matches!(answer(200, body, 3), Answer::Retry(_)));
    }
}
