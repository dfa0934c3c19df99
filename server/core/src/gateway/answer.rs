//! What the gateway reads of an upstream's JSON answer: the model that served it and the usage
//! it reports (what the request is charged for). The answer's other members, its content, most of
//! its bytes, are crossed by the request head's validating top-level scan instead of parsed with
//! serde (which was 7 % of the gateway's instructions per JSON request).
//!
//! It reads exactly what serde_json reads into `{model, usage}` with every other member ignored:
//! a duplicate of either, a value of the wrong type, or a body that is not a JSON object reads as
//! nothing (`None`). A test compares the two on generated and mutated answers.

use super::request::scan;
use crate::pricing::UsageReport;

/// The served model and the usage of a JSON answer, each absent when the answer lacks it (or has
/// `null`); `None` when serde_json would not read the answer.
pub(super) fn read(body: &[u8]) -> Option<(Option<String>, Option<UsageReport>)> {
    let mut obj = scan::Object::new(body).ok()?;
    // `Some(None)`: seen, as null (a second copy is still a duplicate)
    let (mut model, mut usage) = (None, None);
    while let Some(key) = obj.next_key().ok()? {
        let first_time = match &*key {
            "model" => model.is_none(),
            "usage" => usage.is_none(),
            _ => {
                obj.value().ok()?;
                continue;
            }
        };
        if !first_time {
            return None;
        }
        let (start, end) = obj.value().ok()?;
        let v = &body[start..end];
        if key == "model" {
            model = Some(serde_json::from_slice::<Option<String>>(v).ok()?);
        } else {
            usage = Some(serde_json::from_slice::<Option<UsageReport>>(v).ok()?);
        }
    }
    Some((model.flatten(), usage.flatten()))
}

#[cfg(test)]
mod tests {
    use super::read;
    use crate::pricing::UsageReport;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use serde::Deserialize;

    /// The former read: serde_json into the two fields, every other member ignored.
    fn reference(body: &[u8]) -> Option<(Option<String>, Option<UsageReport>)> {
        #[derive(Deserialize)]
        struct JsonHead {
            #[serde(default)]
            model: Option<String>,
            #[serde(default)]
            usage: Option<UsageReport>,
        }
        serde_json::from_slice::<JsonHead>(body).ok().map(|h| (h.model, h.usage))
    }

    const ANSWER: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[{"type":"text","text":"Hi \"model\": {\"usage\": 1}\n"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":3,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":10,"server_tool_use":{"web_search_requests":1},"service_tier":"standard"}}"#;

    #[test]
    fn reads_what_serde_reads_on_hand_picked_answers() {
        let cases = [
            ANSWER,
            r#"{"usage":{"output_tokens":5},"model":null}"#,
            r#"{"model":"a","model":"b"}"#,
            r#"{"model":null,"model":"b"}"#,
            r#"{"usage":null,"usage":{"output_tokens":5}}"#,
            r#"{"mod\u0065l":"escaped key","usage":{"input_tokens":1}}"#,
            r#"{"model":7}"#,
            r#"{"usage":{"output_tokens":"5"}}"#,
            r#"{"usage":{"output_tokens":5,"output_tokens":6}}"#,
            r#"{"content":[{"model":"nested","usage":{"output_tokens":999}}]}"#,
            r#"{"model":"a"} trailing"#,
            r#"[{"model":"a"}]"#,
            r#"{"model":"a","usage":{"output_tokens":1}"#,
            r#"{"model":"caf\u00e9","usage":{}}"#,
            r#"  {"model" : "a" , "usage" : { "input_tokens" : 1 } }  "#,
            "",
            "{}",
        ];
        for c in cases {
            assert_eq!(read(c.as_bytes()), reference(c.as_bytes()), "{c}");
        }
        assert_eq!(read(ANSWER.as_bytes()).unwrap().1.unwrap().output_tokens, Some(10));
    }

    /// Answers built from the real one: members dropped, duplicated, retyped, nested, reordered;
    /// then cut or with a byte changed. Every one read alike.
    #[test]
    fn reads_what_serde_reads_on_generated_answers() {
        let base: Vec<(String, String)> = {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(ANSWER).unwrap();
            v.into_iter().map(|(k, v)| (k, v.to_string())).collect()
        };
        let values = [
            "null", "7", "\"x\"", "\"claude-haiku-4-5\"", "{}", "[]", r#"{"output_tokens":3}"#, r#"{"output_tokens":-1}"#,
            r#"{"input_tokens":1.5}"#, r#"{"model":"inner"}"#, r#"{"output_tokens":9223372036854775808}"#,
        ];
        let member = (0..base.len() + 2, prop::sample::select(values.to_vec()), any::<bool>());
        let bytes = prop::sample::select(br#"{}[],:"\ 0x"#.to_vec());
        let strategy = (prop::collection::vec(member, 0..6), any::<prop::sample::Index>(), 0u8..4, bytes);
        let (read_alike, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        let mut runner = TestRunner::new(Config { cases: 3000, failure_persistence: None, ..Config::default() });
        runner
            .run(&strategy, |(edits, at, cut, byte)| {
                let mut members = base.clone();
                for (i, value, insert) in edits {
                    let key = if i < base.len() { base[i].0.clone() } else { ["model", "usage"][i - base.len()].to_string() };
                    if insert {
                        members.insert(i.min(members.len()), (key, value.to_string()));
                    } else if let Some(m) = members.iter_mut().find(|m| m.0 == key) {
                        m.1 = value.to_string();
                    }
                }
                let body = format!("{{{}}}", members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(","));
                let mut b = body.into_bytes();
                match cut {
                    0 => {}
                    1 => b.truncate(at.index(b.len() + 1)),
                    2 => {
                        let i = at.index(b.len());
                        b[i] = byte;
                    }
                    _ => b.insert(at.index(b.len() + 1), byte),
                }
                let ours = read(&b);
                prop_assert_eq!(&ours, &reference(&b), "{}", String::from_utf8_lossy(&b));
                let count = if ours.is_some() { &read_alike } else { &refused };
                count.set(count.get() + 1);
                Ok(())
            })
            .unwrap();
        let (read_alike, refused) = (read_alike.get(), refused.get());
        assert!(read_alike > 500 && refused > 500, "both outcomes exercised: {read_alike} read, {refused} refused");
    }
}
