//! Reads usage out of an Anthropic SSE stream while the bytes pass through untouched.
//! Events may be split across chunks in any way; only the tail of an unfinished event is buffered,
//! and only `message_start`, `message_delta`, `message_stop`, `error` and `content_block_delta`
//! (for the size of the content it carries) are looked at.
//!
//! A stream that ends without its final usage (`message_delta`) has reported only
//! `message_start`'s output count. [`SseScanner::billable_usage`] then raises the output to an
//! estimate of what was read: one token per [`BYTES_PER_TOKEN_ESTIMATE`] bytes of delta content
//! (text, thinking, tool input JSON), rounded up — about what Claude's tokenizer makes
//! of Chinese text, and more than it makes of English or code, so the estimate leans towards the
//! operator, who is billed for the whole answer.

use crate::pricing::UsageReport;
use serde::Deserialize;
use std::borrow::Cow;

const MAX_PENDING: usize = 8 << 20;

/// Bytes of delta content counted as one output token when the final usage is missing.
pub const BYTES_PER_TOKEN_ESTIMATE: u64 = 3;

#[derive(Default, Debug)]
pub struct SseScanner {
    pending: Vec<u8>,
    pub usage: UsageReport,
    pub model: Option<String>,
    pub saw_start: bool,
    pub saw_delta: bool,
    pub saw_stop: bool,
    pub saw_error: bool,
    pub error_type: Option<String>,
    pub saw_content: bool,
    /// bytes of content in the `content_block_delta` events read (unescaped)
    pub delta_bytes: u64,
}

#[derive(Deserialize)]
struct StartEvent {
    message: StartMessage,
}
#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<UsageReport>,
}
#[derive(Deserialize)]
struct DeltaEvent {
    #[serde(default)]
    usage: Option<UsageReport>,
}
#[derive(Deserialize)]
struct ContentDeltaEvent<'a> {
    #[serde(borrow)]
    delta: ContentDelta<'a>,
}
/// The generated content of a delta (`text_delta`, `thinking_delta`, `input_json_delta`); a
/// `signature_delta` or `citations_delta` carries none (cited text is not output).
#[derive(Deserialize)]
struct ContentDelta<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
}
impl ContentDelta<'_> {
    fn len(&self) -> usize {
        let s = |v: &Option<Cow<str>>| v.as_ref().map_or(0, |x| x.len());
        s(&self.text) + s(&self.thinking) + s(&self.partial_json)
    }
}
#[derive(Deserialize)]
struct ErrorEvent {
    error: ErrorBody,
}
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: String,
}

/// Where the first event in `buf` ends: the start and length of the blank line after it, "\n\n"
/// or "\r\n\r\n", whichever comes first. One pass over the line ends (an event has two or
/// three lines): two substring searches over the whole rest of the buffer for every event were a
/// twentieth of the gateway's instructions per streamed request.
fn find_boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[at..]).map(|i| at + i) {
        match buf.get(i + 1) {
            Some(b'\n') => return Some((i, 2)),
            Some(b'\r') if i > 0 && buf[i - 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') => return Some((i - 1, 4)),
            _ => at = i + 1,
        }
    }
    None
}

impl SseScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The usage to bill: the upstream's final usage when the stream delivered it; otherwise the
    /// usage reported so far, with the output raised to the estimate of the content read.
    pub fn billable_usage(&self) -> UsageReport {
        let mut u = self.usage;
        if !self.saw_delta {
            let estimate = self.delta_bytes.div_ceil(BYTES_PER_TOKEN_ESTIMATE).min(i64::MAX as u64) as i64;
            u.output_tokens = Some(u.output_tokens.unwrap_or(0).max(estimate));
        }
        u
    }

    /// How many bytes at the end of what was fed belong to an unfinished event that is, or may
    /// yet turn out to be, an `error` event (the metered stream holds those back until it ends).
    pub fn error_tail(&self) -> Option<usize> {
        (!self.pending.is_empty() && may_be_error_event(&self.pending)).then_some(self.pending.len())
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.pending.is_empty() {
            let mut rest = chunk;
            while let Some((i, n)) = find_boundary(rest) {
                self.event(&rest[..i]);
                rest = &rest[i + n..];
            }
            if !rest.is_empty() {
                self.pending.extend_from_slice(rest);
            }
        } else {
            self.pending.extend_from_slice(chunk);
            let buf = std::mem::take(&mut self.pending);
            let mut rest = &buf[..];
            while let Some((i, n)) = find_boundary(rest) {
                self.event(&rest[..i]);
                rest = &rest[i + n..];
            }
            self.pending = rest.to_vec();
        }
        if self.pending.len() > MAX_PENDING {
            self.pending.clear();
        }
    }

    fn event(&mut self, ev: &[u8]) {
        let mut name: &[u8] = b"";
        let mut data: Vec<u8> = Vec::new();
        let mut data_one: Option<&[u8]> = None;
        for line in ev.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(v) = line.strip_prefix(b"event:") {
                name = trim(v);
            } else if let Some(v) = line.strip_prefix(b"data:") {
                let v = v.strip_prefix(b" ").unwrap_or(v);
                match data_one {
                    None if data.is_empty() => data_one = Some(v),
                    _ => {
                        if let Some(first) = data_one.take() {
                            data.extend_from_slice(first);
                        }
                        data.push(b'\n');
                        data.extend_from_slice(v);
                    }
                }
            }
        }
        let data: &[u8] = match data_one {
            Some(d) => d,
            None => &data,
        };
        match name {
            b"content_block_delta" => {
                self.saw_content = true;
                if let Ok(e) = serde_json::from_slice::<ContentDeltaEvent>(data) {
                    self.delta_bytes += e.delta.len() as u64;
                }
            }
            b"message_start" => {
                self.saw_start = true;
                if let Ok(e) = serde_json::from_slice::<StartEvent>(data) {
                    if e.message.model.is_some() {
                        self.model = e.message.model;
                    }
                    if let Some(u) = e.message.usage {
                        self.usage.merge(&u);
                    }
                }
            }
            b"message_delta" => {
                self.saw_delta = true;
                if let Ok(e) = serde_json::from_slice::<DeltaEvent>(data) {
                    if let Some(u) = e.usage {
                        self.usage.merge(&u);
                    }
                }
            }
            b"message_stop" => self.saw_stop = true,
            b"error" => {
                self.saw_error = true;
                if let Ok(e) = serde_json::from_slice::<ErrorEvent>(data) {
                    self.error_type = Some(e.error.kind);
                }
            }
            _ => {}
        }
    }
}

/// Whether an event's start (`event: error…`, or a prefix of it) names, or may yet name, `error`.
fn may_be_error_event(start: &[u8]) -> bool {
    let Some(rest) = start.strip_prefix(b"event:") else { return b"event:".starts_with(start) };
    let rest = &rest[rest.iter().position(|&b| b != b' ').unwrap_or(rest.len())..];
    match rest.strip_prefix(b"error") {
        Some(after) => after.is_empty() || after[0] == b'\n' || after[0] == b'\r',
        None => b"error".starts_with(rest),
    }
}

/// Where the `error` event in `buf` begins: a line `event: error` (at the start of `buf` or of a
/// line; data lines are one line of JSON, so the words inside a text cannot match).
pub fn error_event_start(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = memchr::memchr(b'\n', &buf[at..]).map_or(buf.len(), |i| at + i);
        let line = &buf[at..line_end];
        if line.starts_with(b"event:") && may_be_error_event(line) && trim(&line[6..]) == b"error" {
            return Some(at);
        }
        if line_end >= buf.len() {
            return None;
        }
        at = line_end + 1;
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let e = v.iter().rposition(|b| !b.is_ascii_whitespace()).map(|i| i + 1).unwrap_or(s);
    &v[s..e.max(s)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use memchr::memmem;

    const STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-6\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":50,\"cache_creation\":{\"ephemeral_5m_input_tokens\":40,\"ephemeral_1h_input_tokens\":60},\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\\n\\nthere\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":25,\"output_tokens\":42}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn the_first_blank_line_is_found_as_two_substring_searches_find_it() {
        let reference = |buf: &[u8]| {
            let a = memmem::find(buf, b"\n\n").map(|i| (i, 2));
            let b = memmem::find(buf, b"\r\n\r\n").map(|i| (i, 4));
            [a, b].into_iter().flatten().min_by_key(|&(i, _)| i)
        };
        // every string of up to 10 bytes over "\n", "\r" and "a"
        for len in 0..=10u32 {
            for n in 0..3usize.pow(len) {
                let buf: Vec<u8> = (0..len).map(|k| b"\n\ra"[n / 3usize.pow(k) % 3]).collect();
                assert_eq!(find_boundary(&buf), reference(&buf), "{buf:?}");
            }
        }
    }

    fn check(s: &SseScanner) {
        assert!(s.saw_start && s.saw_delta && s.saw_stop && s.saw_content && !s.saw_error);
        assert_eq!(s.model.as_deref(), Some("claude-sonnet-4-6"));
        let t = s.usage.tokens();
        assert_eq!(t.input_tokens, 25);
        assert_eq!(t.output_tokens, 42);
        assert_eq!(t.cache_write_5m_tokens, 40);
        assert_eq!(t.cache_write_1h_tokens, 60);
        assert_eq!(t.cache_read_tokens, 50);
    }

    #[test]
    fn whole_stream() {
        let mut s = SseScanner::new();
        s.feed(STREAM.as_bytes());
        check(&s);
    }

    #[test]
    fn every_split_point() {
        let b = STREAM.as_bytes();
        for cut in 0..b.len() {
            let mut s = SseScanner::new();
            s.feed(&b[..cut]);
            s.feed(&b[cut..]);
            check(&s);
        }
    }

    #[test]
    fn byte_by_byte_and_crlf() {
        let mut s = SseScanner::new();
        for b in STREAM.as_bytes() {
            s.feed(std::slice::from_ref(b));
        }
        check(&s);
        let crlf = STREAM.replace('\n', "\r\n");
        let mut s = SseScanner::new();
        s.feed(crlf.as_bytes());
        check(&s);
    }

    #[test]
    fn an_unfinished_error_event_is_told_apart_from_other_events() {
        for (fed, held) in [
            ("event: message_start\ndata: {}\n\nevent: err", Some(10)),
            ("event: message_start\ndata: {}\n\nevent: error\ndata: {\"type\"", Some(26)),
            ("event: message_start\ndata: {}\n\neve", Some(3)),
            ("event: message_start\ndata: {}\n\nevent: content_block_delta\ndata", None),
            ("event: message_start\ndata: {}\n\nevent: errors\n", None),
            ("event: message_start\ndata: {}\n\n", None),
        ] {
            let mut s = SseScanner::new();
            s.feed(fed.as_bytes());
            assert_eq!(s.error_tail(), held, "{fed:?}");
        }
        let buf = b"data: {\"text\":\"event: error\"}\n\nevent: error\ndata: {}\n\n";
        assert_eq!(error_event_start(buf), Some(31));
        assert_eq!(error_event_start(b"event: error\ndata: {}"), Some(0));
        assert_eq!(error_event_start(b"event: errors\n"), None);
    }

    #[test]
    fn error_event() {
        let mut s = SseScanner::new();
        s.feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
        assert!(s.saw_error);
        assert_eq!(s.error_type.as_deref(), Some("overloaded_error"));
    }

    mod properties {
        use super::super::SseScanner;
        use crate::pricing::TokenUsage;
        use proptest::prelude::*;

        /// A valid stream: message_start with the input side, `deltas` content deltas (and pings),
        /// then message_delta events with cumulative outputs `outputs` (the last one wins).
        fn stream(input: i64, cache_read: i64, cache_write: i64, deltas: &[String], outputs: &[i64], crlf: bool) -> String {
            let mut s = format!(
                "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"model\":\"claude-x\",\"usage\":{{\"input_tokens\":{input},\"cache_read_input_tokens\":{cache_read},\"cache_creation_input_tokens\":{cache_write},\"output_tokens\":1}}}}}}\n\n"
            );
            for (i, d) in deltas.iter().enumerate() {
                if i % 3 == 1 {
                    s.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
                }
                let text = serde_json::to_string(d).unwrap();
                s.push_str(&format!(
                    "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{text}}}}}\n\n"
                ));
            }
            for o in outputs {
                s.push_str(&format!(
                    "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":{o}}}}}\n\n"
                ));
            }
            s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
            if crlf {
                s = s.replace('\n', "\r\n");
            }
            s
        }

        /// Feeds `bytes` cut at the given points (in any order, duplicates allowed).
        fn feed_split(bytes: &[u8], cuts: &[usize]) -> SseScanner {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut sc = SseScanner::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                sc.feed(&bytes[at..c]);
                at = c;
            }
            sc
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
                let mut sc = SseScanner::new();
                for c in &chunks {
                    sc.feed(c);
                }
                let _ = sc.billable_usage().tokens();
            }

            #[test]
            fn usage_is_the_last_cumulative_report_however_the_stream_is_cut(
                input in 0i64..1_000_000,
                cache_read in 0i64..1_000_000,
                cache_write in 0i64..1_000_000,
                deltas in prop::collection::vec("[a-z \"\\\\\n中文]{0,30}", 0..12),
                mut outputs in prop::collection::vec(1i64..100_000, 1..4),
                cuts in prop::collection::vec(any::<usize>(), 0..12),
                crlf in any::<bool>(),
            ) {
                outputs.sort_unstable();
                let text = stream(input, cache_read, cache_write, &deltas, &outputs, crlf);
                let sc = feed_split(text.as_bytes(), &cuts);
                prop_assert!(sc.saw_start && sc.saw_delta && sc.saw_stop && !sc.saw_error);
                let want = TokenUsage {
                    input_tokens: input,
                    output_tokens: *outputs.last().unwrap(),
                    cache_write_5m_tokens: cache_write,
                    cache_write_1h_tokens: 0,
                    cache_read_tokens: cache_read,
                };
                prop_assert_eq!(sc.usage.tokens(), want);
                // with the final usage in hand, nothing is estimated
                prop_assert_eq!(sc.billable_usage().tokens(), want);
                let content: usize = deltas.iter().map(String::len).sum();
                prop_assert_eq!(sc.delta_bytes, content as u64);
            }

            #[test]
            fn a_stream_without_its_final_usage_bills_at_least_the_estimate(
                deltas in prop::collection::vec("[a-z 中]{1,30}", 1..12),
                cuts in prop::collection::vec(any::<usize>(), 0..8),
            ) {
                // everything up to the deltas: no message_delta arrives
                let full = stream(10, 0, 0, &deltas, &[], false);
                let text = &full[..full.find("event: message_stop").unwrap()];
                let sc = feed_split(text.as_bytes(), &cuts);
                let content: u64 = deltas.iter().map(|d| d.len() as u64).sum();
                let billed = sc.billable_usage().tokens();
                prop_assert_eq!(billed.output_tokens, content.div_ceil(super::super::BYTES_PER_TOKEN_ESTIMATE).max(1) as i64);
                prop_assert_eq!(billed.input_tokens, 10);
            }
        }
    }
}
