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

/// A Claude Code-shaped body of about `kb` KB: a long system prompt, tools with JSON schemas, a
/// conversation with tool results, `cache_control` on the last message, `model` late.
fn claude_code_body(kb: usize, session: bool) -> Bytes {
    let tools: Vec<serde_json::Value> = (0..40)
        .map(|i| serde_json::json!({"name": format!("tool_{i}"), "description": "Runs a thing. ".repeat(20),
            "input_schema": {"type": "object", "properties": {"path": {"type": "string", "description": "A path"}, "limit": {"type": "integer"}}, "required": ["path"]}}))
        .collect();
    let mut messages = vec![];
    let mut size = 0;
    let mut i = 0;
    while size < kb * 1024 {
        let result = "line of a file with some code in it; ".repeat(60);
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

/// The request head's cost on Claude Code-sized bodies: `parse_head` (model, stream,
/// max_tokens and the conversation key, one pass) against the floor of any parse (a validating
/// skip of the whole body, `IgnoredAny`) and a full `serde_json::Value` parse. Run with
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
    println!("| body | conversation from | parse_head µs | skip-only floor µs | ratio | full Value parse µs |");
    println!("|---|---|---|---|---|---|");
    for kb in [30, 120, 300] {
        for session in [true, false] {
            let body = claude_code_body(kb, session);
            let head = parse_head(&body).unwrap();
            assert!(head.conversation.is_some());
            let runs = (30_000 / kb as u32).max(50);
            let ours = per_op(runs, &|| {
                std::hint::black_box(parse_head(std::hint::black_box(&body)).unwrap());
            });
            let floor = per_op(runs, &|| {
                std::hint::black_box(serde_json::from_slice::<serde::de::IgnoredAny>(std::hint::black_box(&body)).unwrap());
            });
            let full = per_op(runs, &|| {
                std::hint::black_box(serde_json::from_slice::<serde_json::Value>(std::hint::black_box(&body)).unwrap());
            });
            println!(
                "| {} KB | {} | {ours:.1} | {floor:.1} | {:.2} | {full:.1} |",
                body.len() / 1024,
                if session { "session (metadata.user_id)" } else { "prefix hash" },
                ours / floor
            );
        }
    }
}

mod properties {
    use super::super::parse_head;
    use bytes::Bytes;
    use proptest::prelude::*;
    use serde_json::Value;

    /// Any JSON value, nested, with `model`, `stream` and `max_tokens` keys appearing inside.
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
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_head(&Bytes::from(b));
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
