use super::*;

#[test]
fn model_rewrite_keeps_everything_else() {
    let body = Bytes::from_static(br#"{"max_tokens":5,"model":"claude-a","messages":[{"role":"user","content":"model"}],"x":{"model":"keep"}}"#);
    let h = parse_head(&body).unwrap();
    assert_eq!(h.model, "claude-a");
    let out = with_model(&body, h.model_span, "claude-bbb");
    assert_eq!(
        &out[..],
        br#"{"max_tokens":5,"model":"claude-bbb","messages":[{"role":"user","content":"model"}],"x":{"model":"keep"}}"#
    );
    let esc = Bytes::from_static(br#"{"model":"claude\u002da","max_tokens":1}"#);
    let h = parse_head(&esc).unwrap();
    assert_eq!(h.model, "claude-a");
    assert!(h.model_span.is_none());
    let v: serde_json::Value = serde_json::from_slice(&with_model(&esc, None, "claude-b")).unwrap();
    assert_eq!(v["model"], "claude-b");
}

#[test]
fn key_extraction() {
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_static("Bearer cr-abc"));
    assert_eq!(presented_key(&h), Some("cr-abc"));
    h.insert("x-api-key", HeaderValue::from_static("cr-xyz"));
    assert_eq!(presented_key(&h), Some("cr-xyz"));
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_static("Basic abc"));
    assert_eq!(presented_key(&h), None);
}

#[test]
fn forwarded_headers_drop_credentials() {
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_static("cr-secret"));
    h.insert("authorization", HeaderValue::from_static("Bearer cr-secret"));
    h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    h.insert("anthropic-beta", HeaderValue::from_static("a,b"));
    h.insert("accept-encoding", HeaderValue::from_static("gzip"));
    h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
    let f = forward_headers(&h, &http::header::AUTHORIZATION, &HeaderValue::from_static("Bearer sk-up"));
    assert_eq!(f.get("authorization").unwrap(), "Bearer sk-up");
    assert!(f.get("x-api-key").is_none() && f.get_all("authorization").iter().count() == 1);
    assert!(f.get("accept-encoding").is_none() && f.get("x-forwarded-for").is_none());
    assert_eq!(f.get("anthropic-beta").unwrap(), "a,b");
    assert_eq!(f.get("content-type").unwrap(), "application/json");
}

/// The former serde-based head parse, kept as the oracle of the scan: serde_json reads the whole
/// body into the head's fields (unknown members skipped as `IgnoredAny`).
mod reference {
    use super::super::{affinity, BodyStr, Lenient, SessionOf};
    use serde::Deserialize;
    use std::borrow::Cow;

    #[derive(Deserialize)]
    struct RequestHead<'a> {
        #[serde(borrow, default)]
        model: Option<BodyStr<'a>>,
        #[serde(default)]
        stream: Option<bool>,
        #[serde(default)]
        max_tokens: Option<u64>,
        #[serde(borrow, default)]
        metadata: Lenient<SessionOf<'a>>,
        #[serde(borrow, default)]
        system: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow, default)]
        tools: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow, default)]
        messages: Lenient<FirstOf<'a>>,
    }

    /// The first element of `messages`, as raw JSON.
    #[derive(Default)]
    struct FirstOf<'a>(Option<&'a serde_json::value::RawValue>);

    impl<'de: 'a, 'a> serde::de::Visitor<'de> for FirstOf<'a> {
        type Value = FirstOf<'a>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any value")
        }
        skip_shapes!(scalars);
        skip_shapes!(str);
        skip_shapes!(map);
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let first = a.next_element::<&'de serde_json::value::RawValue>()?;
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(FirstOf(first))
        }
    }

    /// What the head parse reads: model, its span, stream, max_tokens, the conversation.
    pub(super) type Head = (String, Option<(usize, usize)>, bool, Option<u64>, Option<affinity::Conversation>);

    pub(super) fn parse_head(body: &[u8]) -> Result<Head, String> {
        let head: RequestHead = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let model = head.model.ok_or("model: Field required")?.0;
        let span = match &model {
            Cow::Borrowed(s) => Some((s.as_ptr() as usize - body.as_ptr() as usize, s.len())),
            Cow::Owned(_) => None,
        };
        fn raw(v: Option<&serde_json::value::RawValue>) -> &[u8] {
            v.map_or(&b""[..], |r| r.get().as_bytes())
        }
        let conversation = match head.metadata.0 .0 {
            Some(session) => Some(affinity::Conversation::session(&session)),
            None if head.system.is_some() || head.tools.is_some() || head.messages.0 .0.is_some() => {
                Some(affinity::Conversation::prefix(raw(head.system), raw(head.tools), raw(head.messages.0 .0)))
            }
            None => None,
        };
        Ok((model.into_owned(), span, head.stream.unwrap_or(false), head.max_tokens, conversation))
    }
}

/// A Claude Code-shaped body of about `kb` KB: a long system prompt, tools with JSON schemas, a
/// conversation with tool results (file lines ending in `end`: a newline makes the JSON as
/// escape-dense as code), `cache_control` on the last message, `model` late.
fn claude_code_body(kb: usize, session: bool, end: &str) -> Bytes {
    let tools: Vec<serde_json::Value> = (0..40)
        .map(|i| serde_json::json!({"name": format!("tool_{i}"), "description": "Runs a thing. ".repeat(20),
            "input_schema": {"type": "object", "properties": {"path": {"type": "string", "description": "A path"}, "limit": {"type": "integer"}}, "required": ["path"]}}))
        .collect();
    let mut messages = vec![];
    let mut size = 0;
    let mut i = 0;
    while size < kb * 1024 {
        let result = format!("line of a file with some code in it;{end}").repeat(60);
        size += result.len() + 200;
        messages.push(serde_json::json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("toolu_{i}"), "content": result}]}));
        messages.push(serde_json::json!({"role": "assistant", "content": [{"type": "tool_use", "id": format!("toolu_{}", i + 1), "name": "tool_1", "input": {"path": "src/main.rs"}}]}));
        i += 2;
    }
    messages.push(serde_json::json!({"role": "user", "content": [{"type": "text", "text": "go on", "cache_control": {"type": "ephemeral"}}]}));
    let mut v = serde_json::json!({
        "max_tokens": 32000, "stream": true,
        "system": [{"type": "text", "text": "You are Claude Code. ".repeat(600), "cache_control": {"type": "ephemeral"}}],
        "tools": tools, "messages": messages,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
    });
    if session {
        v["metadata"] = serde_json::json!({"user_id": "user_1a2b_account_3c4d_session_7f0e5c1a-0b1c-4d2e-9f3a-5b6c7d8e9f01"});
    }
    v["model"] = serde_json::json!("claude-sonnet-4-6");
    Bytes::from(serde_json::to_vec(&v).unwrap())
}

/// The request head's cost on Claude Code-sized bodies: `parse_head` (the top-level scan: model,
/// stream, max_tokens and the conversation key, one pass) against the former serde-based parse
/// (`reference`, same process and sitting), the floor of any serde_json parse (a validating skip
/// of the whole body, `IgnoredAny`) and a full `serde_json::Value` parse. Run with
/// `bash bench/request_head.sh`; results in bench/RESULTS.md.
#[test]
#[ignore]
fn bench_request_head() {
    fn per_op(runs: u32, f: &dyn Fn()) -> f64 {
        f();
        let t = std::time::Instant::now();
        for _ in 0..runs {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / runs as f64
    }
    println!("| body | conversation from | parse_head (scan) µs | former serde parse_head µs | skip-only floor µs | scan / floor | full Value parse µs |");
    println!("|---|---|---|---|---|---|---|");
    let cases = [(30, true, " "), (30, false, " "), (120, true, " "), (120, false, " "), (300, true, " "), (300, false, " "), (300, false, "\n")];
    for (kb, session, end) in cases {
        let body = claude_code_body(kb, session, end);
        let head = parse_head(&body).unwrap();
        assert!(head.conversation.is_some());
        assert_eq!(reference::parse_head(&body).unwrap().4, head.conversation);
        let runs = (30_000 / kb as u32).max(50);
        let ours = per_op(runs, &|| {
            std::hint::black_box(parse_head(std::hint::black_box(&body)).unwrap());
        });
        let former = per_op(runs, &|| {
            std::hint::black_box(reference::parse_head(std::hint::black_box(&body)).unwrap());
        });
        let floor = per_op(runs, &|| {
            std::hint::black_box(serde_json::from_slice::<serde::de::IgnoredAny>(std::hint::black_box(&body)).unwrap());
        });
        let full = per_op(runs, &|| {
            std::hint::black_box(serde_json::from_slice::<serde_json::Value>(std::hint::black_box(&body)).unwrap());
        });
        println!(
            "| {} KB | {} | {ours:.1} | {former:.1} | {floor:.1} | {:.2} | {full:.1} |",
            body.len() / 1024,
            match (session, end) {
                (true, _) => "session (metadata.user_id)",
                (false, " ") => "prefix hash",
                _ => "prefix hash, a `\\n` per 37 bytes",
            },
            ours / floor
        );
    }
}

/// Hand-picked bodies where a fast scan could go wrong, each checked against the former parse.
#[test]
fn the_scan_agrees_on_edge_cases() {
    let deep = format!("{{\"model\":\"m\",\"x\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<Vec<u8>> = [
        &br#"{"mod\u0065l":"claude-a"}"#[..],
        br#"{"model":"a","mod\u0065l":"b"}"#,
        br#"{"x":{"model":"no"},"model":"yes","y":["model","model"]}"#,
        br#"{"x":"\",\"model\":\"cheap","model":"dear"}"#,
        br#"{"x":"\\","model":"dear"}"#,
        br#"["claude-a",true,5]"#,
        b"\xef\xbb\xbf{\"model\":\"a\"}",
        b"",
        b"{}",
        b" {\"model\":\"a\"} \n",
        br#"{"model":"a"} x"#,
        br#"{"model":"a",}"#,
        br#"{"model":"a","x":[1,]}"#,
        br#"{"model":"a","x":{"k":1,}}"#,
        br#"{"model":"a","x":[}"#,
        br#"{"model":"a","x":[1}}"#,
        br#"{"model":"a","x":{"k":1]]"#,
        br#"{"model":"a","x":{"k":[1}]}"#,
        br#"{"model":"a","x":01}"#,
        br#"{"model":"a","x":1.}"#,
        br#"{"model":"a","x":-}"#,
        br#"{"model":"a","x":1e}"#,
        br#"{"model":"a","x":"\x"}"#,
        br#"{"model":"a","x":"\u12g4"}"#,
        br#"{"model":"a","x":"\ud800"}"#,
        br#"{"model":"\ud800"}"#,
        br#"{"\ud800":1,"model":"a"}"#,
        br#"{"model":"a","x":tru}"#,
        br#"{"model":"a","max_tokens":1e400}"#,
        br#"{"model":"a","messages":1e400}"#,
        br#"{"model":"a","x":1e400}"#,
        br#"{"model":"a","max_tokens":-0}"#,
        br#"{"model":"a","max_tokens":18446744073709551616}"#,
        br#"{"model":"a","max_tokens":5.0}"#,
        br#"{"model":"a","stream":null,"max_tokens":null,"system":null,"messages":null}"#,
        br#"{"model":"a","messages":[null]}"#,
        br#"{"model":"a","messages":[]}"#,
        br#"{"model":"a","messages":[ {"cache_control":1 , "b":2} ,3]}"#,
        br#"{"model":"a","metadata":{"user_id":"u_session_s1","user_id":5}}"#,
        br#"{"model":"a","metadata":{"user_id":"u_session_s1"},"metadata":{}}"#,
        b"{\"model\":\"a\",\"x\":\"\xff\"}",
        b"{\"model\":\"a\",\"system\":\"\xff\"}",
        b"{\"model\":\"a\",\"messages\":[\"\xff\"]}",
        b"{\"model\":\"a\",\"messages\":[1,\"\xff\"]}",
        b"{\"model\":\"a\",\"x\":\"\x01\"}",
        b"{\"model\":\"a\",\"x\xff\":1}",
        b"{\"model\":\"a\",\"x\":{\"\xff\":1}}",
        deep.as_bytes(),
    ]
    .iter()
    .map(|c| c.to_vec())
    .collect();
    for body in cases {
        properties::agree(&body).unwrap();
    }
}

mod properties {
    use super::super::parse_head;
    use super::reference;
    use bytes::Bytes;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use serde_json::Value;
    use std::cell::Cell;

    /// How the scan and the former parse compared on one body.
    #[derive(Clone, Copy)]
    pub(super) enum Outcome {
        /// both read it, alike
        Read,
        /// both refused it
        Refused,
        /// the scan refused a body the former parse read, one that is not a JSON object
        /// serde_json accepts (so its upstream answers 400 too)
        Stricter,
    }

    /// The scan must read what the former serde-based parse reads, refuse what it refuses, and
    /// may refuse more only bodies that serde_json does not accept as a JSON object.
    pub(super) fn agree(body: &[u8]) -> Result<Outcome, TestCaseError> {
        let ours = parse_head(&Bytes::copy_from_slice(body))
            .map(|h| (h.model, h.model_span, h.stream, h.max_tokens, h.conversation))
            .map_err(|e| e.message);
        let former = reference::parse_head(body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        match (former, ours) {
            (Ok(f), Ok(o)) => {
                prop_assert_eq!(f, o, "{}", shown);
                Ok(Outcome::Read)
            }
            (Err(_), Err(_)) => Ok(Outcome::Refused),
            (Ok(_), Err(e)) => {
                let object = serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object());
                prop_assert!(!object, "refused ({}) a JSON object the former parse read: {}", e, shown);
                Ok(Outcome::Stricter)
            }
            (Err(e), Ok(_)) => Err(TestCaseError::fail(format!("read a body the former parse refused ({e}): {shown}"))),
        }
    }

    /// A JSON value with members in order (keys may repeat) and numbers as written.
    #[derive(Clone, Debug)]
    enum J {
        Null,
        Bool(bool),
        Num(&'static str),
        Str(String),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    const NUMS: [&str; 14] = [
        "0", "-0", "7", "-7", "32000", "1.5", "-0.0", "1e3", "2E-2", "1e+2", "18446744073709551615",
        "18446744073709551616", "1e400", "12345678901234567890123",
    ];
    /// the keys the head reads, and others
    const KEYS: [&str; 9] = ["model", "stream", "max_tokens", "metadata", "system", "tools", "messages", "thinking", "x"];

    fn text() -> BoxedStrategy<String> {
        prop_oneof![
            3 => "[a-z \"\\\\/é\u{1F600}\n\u{1}\u{7f}]{0,10}",
            1 => prop::sample::select(vec!["model", "claude-sonnet-4-6", "user_1_account_2_session_abc-123", r#"{"session_id": "s-9"}"#])
                .prop_map(str::to_string),
        ]
        .boxed()
    }

    /// Any JSON value, nested, with the head's keys appearing inside.
    fn value() -> BoxedStrategy<J> {
        let leaf = prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::Bool),
            prop::sample::select(NUMS.to_vec()).prop_map(J::Num),
            text().prop_map(J::Str),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            let key = prop_oneof![prop::sample::select(KEYS.to_vec()).prop_map(str::to_string), Just("user_id".to_string()), "[a-z_]{1,6}"];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
                prop::collection::vec((key, inner), 0..4).prop_map(J::Obj),
            ]
        })
        .boxed()
    }

    /// A value for a top-level key: mostly of the shape the API expects, sometimes anything.
    fn member(key: &'static str) -> BoxedStrategy<(String, J)> {
        let v = match key {
            "model" => prop_oneof![5 => text().prop_map(J::Str), 1 => value()].boxed(),
            "stream" => prop_oneof![4 => any::<bool>().prop_map(J::Bool), 1 => Just(J::Null), 1 => value()].boxed(),
            "max_tokens" => prop_oneof![
                4 => prop::sample::select(vec!["1", "1024", "32000", "0"]).prop_map(J::Num),
                1 => Just(J::Null),
                1 => value()
            ]
            .boxed(),
            "metadata" => prop_oneof![
                3 => (text(), prop::collection::vec(("[a-z_]{1,8}", value()), 0..2)).prop_map(|(u, mut rest)| {
                    rest.insert(0, ("user_id".to_string(), J::Str(u)));
                    J::Obj(rest)
                }),
                1 => value()
            ]
            .boxed(),
            "messages" => prop_oneof![3 => prop::collection::vec(value(), 0..4).prop_map(J::Arr), 1 => value()].boxed(),
            _ => value(),
        };
        v.prop_map(move |v| (key.to_string(), v)).boxed()
    }

    /// A top-level object: some of `KEYS` in any order (`model` mostly), sometimes one twice.
    fn top() -> impl Strategy<Value = J> {
        (prop::sample::subsequence(KEYS[1..].to_vec(), 0..KEYS.len() - 1), prop::bool::weighted(0.9), prop::option::weighted(0.1, 0..KEYS.len()))
            .prop_flat_map(|(mut keys, model, twice)| {
                if model {
                    keys.push("model");
                }
                if let Some(k) = twice {
                    keys.push(KEYS[k]);
                }
                keys.into_iter().map(member).collect::<Vec<_>>().prop_shuffle()
            })
            .prop_map(J::Obj)
    }

    /// Chooses spacing and escapes while rendering (seeded by the case).
    struct Rng(u64);

    impl Rng {
        fn one_in(&mut self, n: u64) -> bool {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0.is_multiple_of(n)
        }
        fn ws(&mut self, out: &mut String) {
            for w in [" ", "\n  ", "\t", "\r\n"] {
                if self.one_in(12) {
                    out.push_str(w);
                }
            }
        }
    }

    /// A string literal; each character escaped the ways JSON allows, at random.
    fn string(s: &str, r: &mut Rng, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            let mut units = [0u16; 2];
            match c {
                '"' | '\\' | '\u{0}'..='\u{1f}' if !r.one_in(3) => {
                    let one = serde_json::to_string(&c.to_string()).unwrap();
                    out.push_str(&one[1..one.len() - 1]);
                }
                '/' if r.one_in(3) => out.push_str("\\/"),
                '"' | '\\' | '\u{0}'..='\u{1f}' => out.push_str(&format!("\\u{:04X}", c as u32)),
                _ if r.one_in(6) => {
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{:04x}", u));
                    }
                }
                _ => out.push(c),
            }
        }
        out.push('"');
    }

    fn render(j: &J, r: &mut Rng, out: &mut String) {
        match j {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => out.push_str(n),
            J::Str(s) => string(s, r, out),
            J::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    r.ws(out);
                    if i > 0 {
                        out.push(',');
                        r.ws(out);
                    }
                    render(v, r, out);
                }
                r.ws(out);
                out.push(']');
            }
            J::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    r.ws(out);
                    if i > 0 {
                        out.push(',');
                        r.ws(out);
                    }
                    string(k, r, out);
                    r.ws(out);
                    out.push(':');
                    r.ws(out);
                    render(v, r, out);
                }
                r.ws(out);
                out.push('}');
            }
        }
    }

    /// A body made invalid (or differently valid) by one edit.
    fn mutate(body: &[u8], kind: u8, at: prop::sample::Index, byte: u8) -> Vec<u8> {
        let mut b = body.to_vec();
        let nth = |b: &[u8], pred: fn(u8) -> bool| {
            let hits: Vec<usize> = b.iter().enumerate().filter(|(_, c)| pred(**c)).map(|(i, _)| i).collect();
            (!hits.is_empty()).then(|| hits[at.index(hits.len())])
        };
        let removed = match kind {
            0 => {
                b.truncate(at.index(b.len() + 1));
                return b;
            }
            1 if !b.is_empty() => Some(at.index(b.len())),
            2 => {
                b.insert(at.index(b.len() + 1), byte);
                return b;
            }
            3 if !b.is_empty() => {
                let i = at.index(b.len());
                b[i] = byte;
                return b;
            }
            4 => nth(&b, |c| c == b'"'),
            5 => nth(&b, |c| matches!(c, b'{' | b'}' | b'[' | b']')),
            6 => nth(&b, |c| c == b'\\'),
            7 => {
                // a closing bracket of the other kind
                if let Some(i) = nth(&b, |c| matches!(c, b'}' | b']')) {
                    b[i] = if b[i] == b'}' { b']' } else { b'}' };
                }
                return b;
            }
            _ => {
                if let Some(i) = nth(&b, |c| c == b'{') {
                    b.splice(i + 1..i + 1, br#""model":"claude-x","#.iter().copied());
                }
                return b;
            }
        };
        if let Some(i) = removed {
            b.remove(i);
        }
        b
    }

    /// Generated bodies, each also mutated: every one must agree with the former parse. Counts
    /// the outcomes, so that both reading and refusing are seen to be exercised.
    #[test]
    fn the_scan_reads_what_serde_json_reads() {
        let counts = [Cell::new(0usize), Cell::new(0), Cell::new(0)];
        let tally = |o: Outcome| counts[o as usize].set(counts[o as usize].get() + 1);
        let bytes = prop::sample::select(br#"{}[],:"\ 0x-e."#.iter().copied().chain([0x01, 0x7f, 0xc3, 0xff]).collect::<Vec<u8>>());
        let edits = prop::collection::vec((0u8..9, any::<prop::sample::Index>(), bytes), 3);
        let mut runner = TestRunner::new(Config { cases: 4000, failure_persistence: None, ..Config::default() });
        runner
            .run(&(top(), any::<u64>(), edits), |(j, seed, edits)| {
                let mut body = String::new();
                let mut r = Rng(seed | 1);
                r.ws(&mut body);
                render(&j, &mut r, &mut body);
                r.ws(&mut body);
                tally(agree(body.as_bytes())?);
                for (kind, at, byte) in edits {
                    tally(agree(&mutate(body.as_bytes(), kind, at, byte))?);
                }
                Ok(())
            })
            .unwrap();
        let [read, refused, stricter] = counts.map(Cell::into_inner);
        eprintln!("bodies compared: {read} read alike, {refused} refused by both, {stricter} refused by the scan only (not JSON objects)");
        assert!(read > 3000 && refused > 3000, "{read} {refused}");
    }

    /// Any JSON value (unordered members), nested, with `model`, `stream` and `max_tokens` keys appearing inside.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z\"\\\\é\u{1F600} ]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop_oneof![Just("model".to_string()), Just("stream".to_string()), "[a-z]{1,6}"], inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// A JSON string literal of `s`, each character escaped as `\uXXXX` or not at random.
    fn quoted(s: &str, escape: &[bool]) -> String {
        let mut out = String::from("\"");
        for (i, c) in s.chars().enumerate() {
            if escape.get(i).copied().unwrap_or(false) && (c as u32) < 0x10000 {
                out.push_str(&format!("\\u{:04x}", c as u32));
            } else {
                let one = serde_json::to_string(&c.to_string()).unwrap();
                out.push_str(&one[1..one.len() - 1]);
            }
        }
        out.push('"');
        out
    }

    /// A top-level object: the other members in order, with `model` inserted at `at`
    /// (`copies` times in a row), in the spacing chosen.
    fn object(others: &[(String, Value)], model: &str, escape: &[bool], at: usize, copies: usize, spaced: bool) -> String {
        let sep = if spaced { " , \n\t" } else { "," };
        let colon = if spaced { " : " } else { ":" };
        let mut members: Vec<String> =
            others.iter().map(|(k, v)| format!("{}{colon}{}", serde_json::to_string(k).unwrap(), v)).collect();
        let m = format!("\"model\"{colon}{}", quoted(model, escape));
        for _ in 0..copies {
            members.insert(at.min(members.len()), m.clone());
        }
        format!("{{{}}}", members.join(sep))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_agree(b in prop::collection::vec(any::<u8>(), 0..512)) {
            agree(&b)?;
        }

        #[test]
        fn arbitrary_json_bytes_agree(b in prop::collection::vec(prop::sample::select(br#"{}[]"\,:"#.iter().copied().chain(b"model 0tn".iter().copied()).collect::<Vec<u8>>()), 0..64)) {
            agree(&[b"{\"model\":\"m\",".as_slice(), &b].concat())?;
        }

        #[test]
        fn the_checked_model_is_the_one_a_json_parser_reads(
            others in prop::collection::vec(("[a-z_]{1,8}".prop_filter("not model", |k| k != "model"), json_value()), 0..6),
            model in "[a-z0-9.\\-]{1,24}|claude-[a-zé\u{1F600}\"\\\\]{1,8}",
            escape in prop::collection::vec(any::<bool>(), 0..32),
            at in 0usize..8,
            spaced in any::<bool>(),
        ) {
            // keys of `others` may repeat: keep the last, as the object is built
            let mut seen = std::collections::HashSet::new();
            let mut uniq: Vec<(String, Value)> = others.into_iter().rev().filter(|(k, _)| seen.insert(k.clone())).collect();
            uniq.reverse();
            let body = object(&uniq, &model, &escape, at, 1, spaced);
            let full: Value = serde_json::from_str(&body).unwrap();
            let head = parse_head(&Bytes::from(body.clone()));
            let stream_ok = full.get("stream").is_none_or(|v| v.is_boolean() || v.is_null());
            let max_ok = full.get("max_tokens").is_none_or(|v| v.is_u64() || v.is_null());
            if stream_ok && max_ok {
                let head = head.unwrap_or_else(|e| panic!("{body}: {}", e.message));
                prop_assert_eq!(Some(head.model.as_str()), full["model"].as_str());
                // the span, when there is one, points at the model's bytes in the body
                if let Some((off, len)) = head.model_span {
                    prop_assert_eq!(&body.as_bytes()[off..off + len], head.model.as_bytes());
                }
            } else {
                prop_assert!(head.is_err());
            }
        }

        #[test]
        fn a_duplicated_model_key_is_refused(
            first in "[a-z0-9\\-]{1,16}",
            second in "[a-z0-9\\-]{1,16}",
            gap in prop::collection::vec(("[a-z]{1,6}".prop_filter("not model", |k| k != "model"), json_value()), 0..3),
        ) {
            // a parser that keeps the first copy and one that keeps the last would disagree on
            // the model: the gateway refuses the body instead of guessing which one is served
            let mut members: Vec<String> = vec![format!("\"model\":{}", serde_json::to_string(&first).unwrap())];
            members.extend(gap.iter().map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v)));
            members.push(format!("\"model\":{}", serde_json::to_string(&second).unwrap()));
            let body = format!("{{{}}}", members.join(","));
            prop_assert!(parse_head(&Bytes::from(body)).is_err());
        }
    }
}
