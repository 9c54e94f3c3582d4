//! The HTTP API's request validation and response bodies, independent of any web
//! framework so that every rule is unit-tested. `docs/api.md` is the reference for every
//! endpoint, field and error code.

use crate::protocol::Entry;
use crate::replication::{Receipt, WriteConcern};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The default largest message, in bytes of UTF-8.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The most characters a `requestId` may have.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// An error answered as `{"error": ..., "code": ...}` with `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub error: String,
    /// Extra fields merged into the body (e.g. `id` and `acks` of a timeout).
    pub extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, error: impl Into<String>) -> Self {
        Self {
            status,
            code,
            error: error.into(),
            extra: Map::new(),
        }
    }

    pub fn bad_request(code: &'static str, error: impl Into<String>) -> Self {
        Self::new(400, code, error)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "message_too_large",
            format!("the message is larger than the limit of {limit} bytes"),
        )
    }

    /// 503 `not_writable`, naming the HTTP address (`host:port`) of the current master
    /// in `primary` (null when no master that takes writes is known).
    pub fn not_writable(error: impl Into<String>, primary: Option<String>) -> Self {
        let mut e = Self::new(503, "not_writable", error);
        e.extra.insert("primary".into(), json!(primary));
        e
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(404, "not_found", format!("no such endpoint: {path}"))
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Self {
        Self::new(
            405,
            "method_not_allowed",
            format!("{method} is not allowed on {path}; use {allowed}"),
        )
    }

    /// 504 for a write whose write concern was not met in time.
    pub fn write_concern_timeout(receipt: &Receipt, asked: WriteConcern) -> Self {
        let mut e = Self::new(
            504,
            "write_concern_timeout",
            format!(
                "message {} is stored but only {} member(s) held it before the timeout (writeConcern {}); it keeps replicating",
                receipt.id, receipt.acks, asked
            ),
        );
        e.extra.insert("id".into(), json!(receipt.id));
        e.extra.insert("acks".into(), json!(receipt.acks));
        e.extra.insert("ackedBy".into(), json!(receipt.acked_by));
        e
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert("error".into(), Value::String(self.error.clone()));
        m.insert("code".into(), Value::String(self.code.into()));
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

/// A validated `POST /newMessage` body.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub message: String,
    pub write_concern: WriteConcern,
    pub timeout: Option<Duration>,
    pub request_id: Option<String>,
}

/// Validate a `POST /newMessage` body. Unknown fields are ignored.
pub fn parse_new_message(body: &[u8], max_message_bytes: usize) -> Result<NewMessage, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the body must be a JSON object like {\"message\": \"hello\", \"writeConcern\": 2}",
        ));
    };
    let message = match obj.remove("message") {
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request(
                "missing_message",
                "the field \"message\" is required",
            ));
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_message",
                format!("\"message\" must be a string, got {}", type_name(&other)),
            ));
        }
    };
    if message.len() > max_message_bytes {
        return Err(ApiError::too_large(max_message_bytes));
    }
    let write_concern = match obj.remove("writeConcern") {
        None | Some(Value::Null) => WriteConcern::Count(1),
        Some(Value::String(s)) if s == "majority" => WriteConcern::Majority,
        Some(v) => match whole_number(&v) {
            Some(n) if (1..=u32::MAX as u64).contains(&n) => WriteConcern::Count(n as u32),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_write_concern",
                    format!("\"writeConcern\" must be an integer >= 1 or \"majority\", got {v}"),
                ));
            }
        },
    };
    let timeout = match obj.remove("timeoutMs") {
        None | Some(Value::Null) => None,
        Some(v) => match whole_number(&v) {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => {
                return Err(ApiError::bad_request(
                    "invalid_timeout",
                    format!("\"timeoutMs\" must be an integer >= 0, got {v}"),
                ));
            }
        },
    };
    let request_id = match obj.remove("requestId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_REQUEST_ID_CHARS => {
            Some(s)
        }
        Some(v) => {
            return Err(ApiError::bad_request(
                "invalid_request_id",
                format!(
                    "\"requestId\" must be a non-empty string of at most {MAX_REQUEST_ID_CHARS} characters, got {}",
                    short(&v)
                ),
            ));
        }
    };
    Ok(NewMessage {
        message,
        write_concern,
        timeout,
        request_id,
    })
}

/// A JSON number that is a whole, non-negative integer (`2` or `2.0`), else None.
fn whole_number(v: &Value) -> Option<u64> {
    let n = v.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64).then_some(f as u64)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!(
            "{}... ({})",
            s.chars().take(40).collect::<String>(),
            type_name(v)
        )
    } else {
        s
    }
}

/// `GET /messages?from=&limit=&readConcern=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessagesQuery {
    /// First id wanted (0 and 1 both mean the start).
    pub from: u64,
    /// Most messages wanted; None: all.
    pub limit: Option<usize>,
    /// Only messages a majority of the members holds (`readConcern=majority`).
    pub majority: bool,
}

/// Where a change stream (`GET /messages/stream`) starts: the query's `from`, unless
/// the client sends `Last-Event-ID` (an `EventSource` reconnecting sends the id of the
/// last event it got), which resumes just after that id and wins over `from`.
pub fn stream_start(
    mut q: MessagesQuery,
    last_event_id: Option<&[u8]>,
) -> Result<MessagesQuery, ApiError> {
    if let Some(raw) = last_event_id {
        let id = std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "the Last-Event-ID header must be a message id (an integer >= 0), got {:?}",
                        String::from_utf8_lossy(raw)
                    ),
                )
            })?;
        q.from = id.saturating_add(1);
    }
    q.from = q.from.max(1);
    Ok(q)
}

/// Validate a `POST /members` body, `{"name": "s2"}`: the member's name (1 to 128
/// bytes, as a secondary's `--name`). Unknown fields are ignored.
pub fn parse_member(body: &[u8]) -> Result<String, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")))?;
    match value.get("name") {
        Some(Value::String(name)) if !name.is_empty() && name.len() <= 128 => Ok(name.clone()),
        _ => Err(ApiError::bad_request(
            "invalid_request",
            "the body must be {\"name\": \"<a member's name, 1 to 128 bytes>\"}",
        )),
    }
}

/// A `POST /stepDown` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepDown {
    /// Stand for no election for this long (`seconds`, default 60).
    pub quiet: Duration,
    /// Answer 504 if no other member is master after this long (`timeoutMs`, default
    /// 10 s).
    pub timeout: Duration,
}

/// Validate a `POST /stepDown` body, `{"seconds": 60, "timeoutMs": 10000}`: both
/// optional, whole numbers (`seconds` 0 to 86400, `timeoutMs` up to 1 hour); an empty
/// body takes the defaults. Unknown fields are ignored.
pub fn parse_step_down(body: &[u8]) -> Result<StepDown, ApiError> {
    let mut out = StepDown {
        quiet: Duration::from_secs(60),
        timeout: Duration::from_secs(10),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(out);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the body must be a JSON object like {\"seconds\": 60}",
        ));
    };
    let whole = |key: &str, max: u64| -> Result<Option<u64>, ApiError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().filter(|n| *n <= max).map(Some).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    format!("\"{key}\" must be a whole number from 0 to {max}, got {v}"),
                )
            }),
        }
    };
    if let Some(s) = whole("seconds", 86_400)? {
        out.quiet = Duration::from_secs(s);
    }
    if let Some(ms) = whole("timeoutMs", 3_600_000)? {
        out.timeout = Duration::from_millis(ms);
    }
    Ok(out)
}

/// Parse `GET /checksum`'s query: `upTo=N`, the last id the checksum covers (0: the
/// empty prefix). Without `upTo` it covers the whole log (`None` here). Unknown
/// parameters are ignored.
pub fn parse_checksum_query(query: &str) -> Result<Option<u64>, ApiError> {
    let mut up_to = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "upTo" {
            up_to = Some(value.parse::<u64>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("\"upTo\" must be a message id (an integer >= 0), got {value:?}"),
                )
            })?);
        }
    }
    Ok(up_to)
}

/// Parse a raw query string. Unknown parameters are ignored.
pub fn parse_messages_query(query: &str) -> Result<MessagesQuery, ApiError> {
    let mut q = MessagesQuery {
        from: 1,
        limit: None,
        majority: false,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "from" => {
                q.from = value.parse().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("\"from\" must be an integer >= 0, got {value:?}"),
                    )
                })?
            }
            "limit" => {
                q.limit = Some(value.parse().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("\"limit\" must be an integer >= 0, got {value:?}"),
                    )
                })?)
            }
            "readConcern" => {
                q.majority = match value {
                    "local" => false,
                    "majority" => true,
                    _ => {
                        return Err(ApiError::bad_request(
                            "invalid_query",
                            format!(
                                "\"readConcern\" must be \"local\" or \"majority\", got {value:?}"
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(q)
}

/// One element of the `GET /messages` array.
#[derive(Serialize)]
struct MessageView<'a> {
    id: u64,
    message: &'a str,
}

/// The `GET /messages` body for `entries`.
pub fn messages_json(entries: &[Entry]) -> Vec<u8> {
    let views: Vec<MessageView<'_>> = entries
        .iter()
        .map(|e| MessageView {
            id: e.id,
            message: &e.message,
        })
        .collect();
    serde_json::to_vec(&views).expect("serialising strings and integers cannot fail")
}

/// A piece of the `GET /messages` array: `[` first (when `first`), then the entries,
/// each preceded by a comma unless it opens the array. The caller closes with `]`.
pub fn messages_json_chunk(entries: &[Entry], first: bool) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(entries.iter().map(|e| e.message.len() + 32).sum::<usize>() + 1);
    if first {
        out.push(b'[');
    }
    for (i, e) in entries.iter().enumerate() {
        if i > 0 || !first {
            out.push(b',');
        }
        serde_json::to_writer(
            &mut out,
            &MessageView {
                id: e.id,
                message: &e.message,
            },
        )
        .expect("serialising strings and integers cannot fail");
    }
    out
}

/// Types that describe the HTTP API in its OpenAPI document (`GET /openapi.json`).
pub mod doc {
    /// What an admin operation answers a request that may not do it (docs/security.md).
    #[derive(utoipa::IntoResponses)]
    pub enum AdminRefusal {
        /// With --admin-token-file: no or a wrong `Authorization: Bearer` token
        #[response(status = 401)]
        Unauthorized(Error),
        /// Without --admin-token-file: the client is not on loopback, or the request comes from a web page (an `Origin` header)
        #[response(status = 403)]
        Forbidden(Error),
    }

    use serde::Serialize;
    use utoipa::ToSchema;

    /// Body of `POST /newMessage`. Unknown fields are ignored.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct NewMessage {
        /// The payload; may be empty; at most the configured limit (default 1 MiB).
        pub message: String,
        /// How many members (the master counts as one) must hold the message: an
        /// integer >= 1, or "majority". Default 1.
        #[schema(value_type = Option<Object>, example = json!(2))]
        pub write_concern: Option<serde_json::Value>,
        /// Give up waiting after this many milliseconds (0 or absent: no limit). The
        /// message is not withdrawn.
        pub timeout_ms: Option<u64>,
        /// Idempotency key (1 to 128 characters): a retry returns the first id.
        pub request_id: Option<String>,
    }

    /// Answer to a write whose write concern was met.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Receipt {
        /// The message's place in the log (1, 2, 3, ... without gaps).
        pub id: u64,
        /// How many members held it when the answer was sent.
        pub acks: usize,
        /// Which members.
        pub acked_by: Vec<String>,
    }

    /// Every error answer.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Error {
        /// What went wrong, for a person.
        pub error: String,
        /// Stable snake_case code (see docs/api.md).
        pub code: String,
        /// 504 only: the stored message's id.
        pub id: Option<u64>,
        /// 504 only: how many members held it.
        pub acks: Option<usize>,
        /// 504 only: which members held it.
        pub acked_by: Option<Vec<String>>,
        /// 503 `not_writable` only: the HTTP address (`host:port`) of the current
        /// master, or null when none that takes writes is known.
        pub primary: Option<String>,
    }

    /// Body of `POST /stepDown`.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct StepDown {
        /// Stand for no election for this long (default 60).
        pub seconds: Option<u64>,
        /// Answer 504 if no other member is master by then (default 10000).
        pub timeout_ms: Option<u64>,
    }

    /// A member to re-admit (`POST /members`).
    #[derive(Serialize, ToSchema)]
    pub struct Member {
        /// The secondary's `--name`.
        pub name: String,
    }

    /// One message of the log.
    #[derive(Serialize, ToSchema)]
    pub struct Message {
        pub id: u64,
        pub message: String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_query_takes_a_whole_number_or_nothing() {
        assert_eq!(parse_checksum_query("upTo=7").unwrap(), Some(7));
        assert_eq!(parse_checksum_query("upTo=0&x=1").unwrap(), Some(0));
        assert_eq!(parse_checksum_query("").unwrap(), None);
        for bad in [
            "upTo=",
            "upTo=-1",
            "upTo=x",
            "upTo=1.0",
            "upTo=18446744073709551616",
        ] {
            let e = parse_checksum_query(bad).unwrap_err();
            assert_eq!((e.status, e.code), (400, "invalid_query"), "{bad}");
        }
    }

    #[test]
    fn a_stream_resumes_after_last_event_id_which_wins_over_from() {
        let q = |s: &str| parse_messages_query(s).unwrap();
        assert_eq!(stream_start(q("from=5"), None).unwrap().from, 5);
        assert_eq!(stream_start(q(""), None).unwrap().from, 1);
        assert_eq!(stream_start(q("from=0"), None).unwrap().from, 1);
        assert_eq!(stream_start(q("from=5"), Some(b"9")).unwrap().from, 10);
        assert_eq!(stream_start(q(""), Some(b" 0 ")).unwrap().from, 1);
        let q2 = stream_start(q("readConcern=majority&limit=3"), Some(b"2")).unwrap();
        assert_eq!((q2.from, q2.limit, q2.majority), (3, Some(3), true));
        for bad in [&b"x"[..], b"-1", b"", b"\xff"] {
            assert_eq!(
                stream_start(q(""), Some(bad)).unwrap_err().code,
                "invalid_query"
            );
        }
        assert_eq!(
            stream_start(q(""), Some(b"18446744073709551615"))
                .unwrap()
                .from,
            u64::MAX
        );
    }

    #[test]
    fn members_body() {
        assert_eq!(parse_member(br#"{"name": "s2", "x": 1}"#).unwrap(), "s2");
        for bad in [
            &br#"{"name": ""}"#[..],
            br#"{"name": 3}"#,
            br#"{}"#,
            br#"[]"#,
        ] {
            assert_eq!(parse_member(bad).unwrap_err().code, "invalid_request");
        }
        let long = format!(r#"{{"name": "{}"}}"#, "x".repeat(129));
        assert_eq!(
            parse_member(long.as_bytes()).unwrap_err().code,
            "invalid_request"
        );
        assert_eq!(parse_member(b"{").unwrap_err().code, "invalid_json");
    }

    #[test]
    fn not_writable_names_the_primary_or_null() {
        let e = ApiError::not_writable("no", Some("h:1".into()));
        assert_eq!(e.body()["primary"], "h:1");
        let e = ApiError::not_writable("no", None);
        assert!(e.body()["primary"].is_null());
        assert_eq!((e.status, e.code), (503, "not_writable"));
    }

    fn ok(body: &str) -> NewMessage {
        parse_new_message(body.as_bytes(), 10).unwrap()
    }
    fn err(body: &str) -> (u16, &'static str) {
        let e = parse_new_message(body.as_bytes(), 10).unwrap_err();
        (e.status, e.code)
    }

    #[test]
    fn accepts_the_documented_shapes() {
        let m = ok(r#"{"message":"hi","writeConcern":2}"#);
        assert_eq!(m.message, "hi");
        assert_eq!(m.write_concern, WriteConcern::Count(2));
        assert_eq!(m.timeout, None);
        assert_eq!(
            ok(r#"{"message":""}"#).write_concern,
            WriteConcern::Count(1)
        );
        assert_eq!(
            ok(r#"{"message":"a","writeConcern":"majority"}"#).write_concern,
            WriteConcern::Majority
        );
        assert_eq!(
            ok(r#"{"message":"a","writeConcern":3.0}"#).write_concern,
            WriteConcern::Count(3)
        );
        assert_eq!(
            ok(r#"{"message":"a","timeoutMs":250}"#).timeout,
            Some(Duration::from_millis(250))
        );
        assert_eq!(ok(r#"{"message":"a","timeoutMs":0}"#).timeout, None);
        assert_eq!(
            ok(r#"{"message":"a","requestId":"k-1","extra":[1,2]}"#).request_id,
            Some("k-1".into())
        );
        // 10 bytes exactly is allowed; multi-byte characters count in bytes.
        assert_eq!(ok(r#"{"message":"0123456789"}"#).message.len(), 10);
    }

    #[test]
    fn refuses_every_bad_input_with_its_code() {
        assert_eq!(err("{"), (400, "invalid_json"));
        assert_eq!(err(""), (400, "invalid_json"));
        assert_eq!(err("[1]"), (400, "invalid_request"));
        assert_eq!(err(r#""hello""#), (400, "invalid_request"));
        assert_eq!(err("{}"), (400, "missing_message"));
        assert_eq!(err(r#"{"message":null}"#), (400, "missing_message"));
        assert_eq!(err(r#"{"message":5}"#), (400, "invalid_message"));
        for wc in [
            "0",
            "-1",
            "1.5",
            "\"all\"",
            "\"Majority\"",
            "true",
            "[]",
            "1e30",
        ] {
            let body = format!(r#"{{"message":"a","writeConcern":{wc}}}"#);
            assert_eq!(err(&body), (400, "invalid_write_concern"), "{wc}");
        }
        for t in ["-1", "0.5", "\"10\"", "{}"] {
            let body = format!(r#"{{"message":"a","timeoutMs":{t}}}"#);
            assert_eq!(err(&body), (400, "invalid_timeout"), "{t}");
        }
        let long = "x".repeat(129);
        for r in ["\"\"", "5", &format!("\"{long}\"")] {
            let body = format!(r#"{{"message":"a","requestId":{r}}}"#);
            assert_eq!(err(&body), (400, "invalid_request_id"), "{r}");
        }
        assert_eq!(
            err(r#"{"message":"01234567890"}"#),
            (413, "message_too_large")
        );
        assert_eq!(err(r#"{"message":"ééééé é"}"#), (413, "message_too_large"));
    }

    #[test]
    fn error_bodies_carry_code_and_extras() {
        let r = Receipt {
            id: 7,
            acks: 1,
            acked_by: vec!["m".into()],
            term: 1,
        };
        let b = ApiError::write_concern_timeout(&r, WriteConcern::Count(3)).body();
        assert_eq!(b["code"], "write_concern_timeout");
        assert_eq!(b["id"], 7);
        assert_eq!(b["acks"], 1);
        assert_eq!(b["ackedBy"], json!(["m"]));
        assert!(b["error"].as_str().unwrap().contains("message 7"));
    }

    #[test]
    fn messages_query() {
        assert_eq!(
            parse_messages_query("").unwrap(),
            MessagesQuery {
                from: 1,
                limit: None,
                majority: false
            }
        );
        assert_eq!(
            parse_messages_query("from=5&limit=2&x=y&readConcern=majority").unwrap(),
            MessagesQuery {
                from: 5,
                limit: Some(2),
                majority: true
            }
        );
        assert!(!parse_messages_query("readConcern=local").unwrap().majority);
        for bad in [
            "from=-1",
            "from=a",
            "limit=",
            "limit=1.5",
            "from",
            "readConcern=all",
        ] {
            assert_eq!(
                parse_messages_query(bad).unwrap_err().code,
                "invalid_query",
                "{bad}"
            );
        }
    }

    #[test]
    fn chunks_join_into_the_same_array() {
        let es: Vec<Entry> = (1..=5)
            .map(|id| Entry {
                term: 1,
                id,
                message: format!("m{id}"),
                request_id: None,
            })
            .collect();
        let mut joined = messages_json_chunk(&es[..2], true);
        joined.extend(messages_json_chunk(&es[2..], false));
        joined.push(b']');
        assert_eq!(joined, messages_json(&es));
        let mut empty = messages_json_chunk(&[], true);
        empty.push(b']');
        assert_eq!(empty, b"[]");
    }

    #[test]
    fn messages_body_has_only_id_and_message() {
        let e = Entry {
            term: 1,
            id: 3,
            message: "a\"b".into(),
            request_id: None,
        };
        assert_eq!(
            String::from_utf8(messages_json(&[e])).unwrap(),
            r#"[{"id":3,"message":"a\"b"}]"#
        );
    }
}
