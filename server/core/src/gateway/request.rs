//! Reading a client's request: the body as bytes (size limit), the one-pass head parse (`model`,
//! `stream`, `max_tokens` and what names the conversation, borrowed from the body, which is
//! forwarded untouched; the top level crossed by `scan`), the presented key, and the header
//! policy both ways (what reaches the upstream, what reaches the client).

use super::affinity::{self, ConvKey};
use super::error::{set_request_id, ApiError, Dialect, SHOULD_RETRY};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use std::borrow::Cow;
use uuid::Uuid;

pub(super) static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static CLAUDE_CODE_SESSION: HeaderName = HeaderName::from_static("x-claude-code-session-id");

pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut too_large = false;
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(x) = src {
            if x.to_string().contains("length limit exceeded") {
                too_large = true;
                break;
            }
            src = x.source();
        }
        if too_large {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("Request exceeds the maximum size of {limit} bytes"))
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "Could not read the request body")
        }
    })
}

pub(super) fn presented_key(h: &HeaderMap) -> Option<&str> {
    if let Some(v) = h.get(&X_API_KEY).and_then(|v| v.to_str().ok()).map(str::trim) {
        if !v.is_empty() {
            return Some(v);
        }
    }
    let auth = h.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = auth.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A string borrowed from the body when it has no escapes (so its position is known).
struct BodyStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BodyStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BodyStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BodyStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BodyStr(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A value read when it has the expected shape, and skipped (as `Default`) when it has not.
#[derive(Default)]
struct Lenient<T>(T);

impl<'de, T: Default + serde::de::Visitor<'de, Value = T>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(T::default()).map(Lenient)
    }
}

/// `metadata.user_id`'s session id (borrowed from the body when it has no escapes).
#[derive(Default)]
struct SessionOf<'a>(Option<Cow<'a, str>>);

/// Visitor methods that skip a value of a shape the visitor does not read (to its `Default`).
macro_rules! skip_shapes {
    (scalars) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> { Ok(Self::Value::default()) }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> { Ok(Self::Value::default()) }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> { Ok(Self::Value::default()) }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> { Ok(Self::Value::default()) }
        fn visit_unit<E>(self) -> Result<Self::Value, E> { Ok(Self::Value::default()) }
    };
    (str) => {
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> { Ok(Self::Value::default()) }
    };
    (seq) => {
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Self::Value::default())
        }
    };
    (map) => {
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
            Ok(Self::Value::default())
        }
    };
}

impl<'de: 'a, 'a> serde::de::Visitor<'de> for SessionOf<'a> {
    type Value = SessionOf<'a>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }
    skip_shapes!(scalars);
    skip_shapes!(str);
    skip_shapes!(seq);
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(k) = a.next_key::<Cow<'de, str>>()? {
            if k == "user_id" {
                if let Some(BodyStr(v)) = a.next_value::<Lenient<MaybeStr<'de>>>()?.0 .0 {
                    found = match v {
                        Cow::Borrowed(s) => affinity::session_of_user_id(s).map(Cow::Borrowed),
                        Cow::Owned(s) => affinity::session_of_user_id(&s).map(|x| Cow::Owned(x.to_string())),
                    };
                }
            } else {
                a.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(SessionOf(found))
    }
}

/// A string, or None for a value of another shape.
#[derive(Default)]
struct MaybeStr<'a>(Option<BodyStr<'a>>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for MaybeStr<'a> {
    type Value = MaybeStr<'a>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(MaybeStr(Some(BodyStr(Cow::Borrowed(v)))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(MaybeStr(Some(BodyStr(Cow::Owned(v.to_string())))))
    }
    skip_shapes!(scalars);
    skip_shapes!(seq);
    skip_shapes!(map);
}

pub(super) struct ParsedHead {
    pub(super) model: String,
    /// byte span of the model string's contents in the body, when it was not escaped
    pub(super) model_span: Option<(usize, usize)>,
    pub(super) stream: bool,
    pub(super) max_tokens: Option<u64>,
    /// the conversation the body names (a session, else its beginning), when it names one
    conversation: Option<affinity::Conversation>,
}

/// The head in one pass: `scan` crosses the top level (validating, reading no nested value) and
/// the few values the gateway reads are parsed by serde_json from their spans, so each means
/// what it meant when serde_json read the whole body. A key the head reads, present twice, is
/// refused: parsers disagree on which copy counts.
pub(super) fn parse_head(body: &Bytes) -> Result<ParsedHead, ApiError> {
    fn syntax<E>(_: E) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "There was an error parsing the body as JSON")
    }
    fn invalid(field: &str, e: serde_json::Error) -> ApiError {
        if !e.is_data() {
            return syntax(e);
        }
        let msg = e.to_string();
        let msg = msg.strip_suffix(&format!(" at line {} column {}", e.line(), e.column())).unwrap_or(&msg);
        ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid request body: {field}: {msg}"))
    }
    let b: &[u8] = body;
    let mut obj = scan::Object::new(b).map_err(syntax)?;
    let (mut model, mut stream, mut max_tokens, mut session) = (None, None, None, None);
    let (mut system, mut tools, mut first) = (None, None, None);
    let mut seen = [false; 7];
    const FIELDS: [&str; 7] = ["model", "stream", "max_tokens", "metadata", "system", "tools", "messages"];
    while let Some(key) = obj.next_key().map_err(syntax)? {
        let Some(f) = FIELDS.iter().position(|f| *f == key) else {
            obj.value().map_err(syntax)?;
            continue;
        };
        if std::mem::replace(&mut seen[f], true) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid request body: duplicate field `{key}`")));
        }
        let (start, end) = obj.value().map_err(syntax)?;
        let v = &b[start..end];
        // `system`, `tools` and the first message are hashed raw: checked as UTF-8, as serde_json
        // checked a raw value (`null` is no value)
        let raw = || std::str::from_utf8(v).map(|_| (v != b"null").then_some(v)).map_err(syntax);
        match f {
            0 => model = serde_json::from_slice::<Option<BodyStr>>(v).map_err(|e| invalid("model", e))?,
            1 => stream = serde_json::from_slice::<Option<bool>>(v).map_err(|e| invalid("stream", e))?,
            2 => max_tokens = serde_json::from_slice::<Option<u64>>(v).map_err(|e| invalid("max_tokens", e))?,
            3 => session = serde_json::from_slice::<Lenient<SessionOf>>(v).map_err(|e| invalid("metadata", e))?.0 .0,
            4 => system = raw()?,
            5 => tools = raw()?,
            _ => match scan::first_element(b, start) {
                Some((s, e)) => first = std::str::from_utf8(&b[s..e]).map(|_| Some(&b[s..e])).map_err(syntax)?,
                // not an array (or an empty one): no first message, but still a JSON value
                None => drop(serde_json::from_slice::<serde_json::Value>(v).map_err(|e| invalid("messages", e))?),
            },
        }
    }
    let Some(model) = model else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "model: Field required"));
    };
    let model = model.0;
    let span = match &model {
        Cow::Borrowed(s) => {
            let off = s.as_ptr() as usize - body.as_ptr() as usize;
            Some((off, s.len()))
        }
        Cow::Owned(_) => None,
    };
    let conversation = match session {
        Some(session) => Some(affinity::Conversation::session(&session)),
        None if system.is_some() || tools.is_some() || first.is_some() => Some(affinity::Conversation::prefix(
            system.unwrap_or_default(),
            tools.unwrap_or_default(),
            first.unwrap_or_default(),
        )),
        None => None,
    };
    Ok(ParsedHead {
        model: model.into_owned(),
        model_span: span,
        stream: stream.unwrap_or(false),
        max_tokens,
        conversation,
    })
}

/// The same body with another model, changing nothing else.
pub(super) fn with_model(body: &Bytes, span: Option<(usize, usize)>, model: &str) -> Bytes {
    let quoted = serde_json::to_string(model).unwrap_or_default();
    let inner = &quoted[1..quoted.len().saturating_sub(1)];
    match span {
        Some((off, len)) => {
            let mut v = Vec::with_capacity(body.len() + inner.len());
            v.extend_from_slice(&body[..off]);
            v.extend_from_slice(inner.as_bytes());
            v.extend_from_slice(&body[off + len..]);
            Bytes::from(v)
        }
        None => {
            let mut v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            v["model"] = serde_json::Value::String(model.to_string());
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        }
    }
}

/// Client headers that reach the upstream: everything but hop-by-hop headers, the client's own
/// credentials, cookies, forwarding headers and Accept-Encoding (usage must be readable); plus
/// the upstream's credential.
pub(super) fn forward_headers(src: &HeaderMap, auth_name: &HeaderName, auth_value: &HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(src.len() + 2);
    for (name, value) in src {
        let n = name.as_str();
        let skip = matches!(
            n,
            "host" | "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "proxy-authorization"
                | "proxy-connection" | "te" | "trailer" | "upgrade" | "x-api-key" | "authorization" | "cookie"
                | "accept-encoding" | "forwarded" | "x-real-ip" | "via"
        ) || n.starts_with("x-forwarded-");
        if !skip {
            h.append(name.clone(), value.clone());
        }
    }
    if !h.contains_key(http::header::CONTENT_TYPE) {
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    h.insert(auth_name.clone(), auth_value.clone());
    h
}

/// Upstream response headers that reach the client (never the upstream's identity, its rate
/// limits or its request id).
pub(super) fn response_headers(src: &HeaderMap, rid: &str, dialect: Dialect) -> HeaderMap {
    let mut h = HeaderMap::new();
    for name in [http::header::CONTENT_TYPE, http::header::RETRY_AFTER] {
        if let Some(v) = src.get(&name) {
            h.insert(name, v.clone());
        }
    }
    if let Some(v) = src.get(&SHOULD_RETRY) {
        h.insert(SHOULD_RETRY.clone(), v.clone());
    }
    set_request_id(&mut h, rid, dialect);
    h
}

/// The conversation (cache-aware routing, see `affinity`): the session Claude Code names in a
/// header, else what the body names; one per key.
pub(super) fn conversation(headers: &HeaderMap, head: &ParsedHead, key_id: Uuid) -> Option<ConvKey> {
    headers
        .get(&CLAUDE_CODE_SESSION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(affinity::Conversation::session)
        .or(head.conversation)
        .map(|c| c.of_key(key_id))
}

mod scan;
#[cfg(test)]
mod tests;
