//! How a usage record is written in the spool: one frame per record,
//! `[payload length: u32][xxh3-64 of the payload: u64][payload]`, little-endian. The payload holds
//! the record's fields in declaration order: integers little-endian, booleans one byte, strings a
//! u32 length and their UTF-8, options a 0/1 byte and then the value, UUIDs their 16 bytes, times
//! seconds (i64) and nanoseconds (u32). A frame cut short (its process died in the middle of the
//! `write`) or whose checksum does not match ends what is read of a segment.
//!
//! Written by hand rather than with serde_json because it is on every request's path: the JSON of
//! a record (a map of 29 keys, escaped) cost ~12,000 instructions, this a few hundred
//! (bench/RESULTS.md, 2026-11-30, "Usage spool").

use crate::pricing::{ServerToolUse, TokenUsage};
use crate::money::{MicroCny, MicroUsd};
use crate::usage::{Outcome, UsageRecord};
use chrono::{DateTime, Utc};
use uuid::Uuid;
use xxhash_rust::xxh3::xxh3_64;

const HEADER: usize = 12;

/// Appends the frame of `rec` to `out`.
pub(super) fn encode(rec: &UsageRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    rec.put(out);
    let payload = &out[start + HEADER..];
    // a record is far below 4 GiB (its longest field, the model asked for, is within the body limit)
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let sum = xxh3_64(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&sum.to_le_bytes());
}

/// The records of a segment, and how many bytes at its end could not be read (a torn last frame).
pub(super) fn decode(mut bytes: &[u8]) -> (Vec<UsageRecord>, usize) {
    let mut records = vec![];
    while let Some((rec, rest)) = frame(bytes) {
        records.push(rec);
        bytes = rest;
    }
    (records, bytes.len())
}

fn frame(bytes: &[u8]) -> Option<(UsageRecord, &[u8])> {
    let mut r = Reader(bytes);
    let len = u32::take(&mut r)? as usize;
    let sum = u64::from_le_bytes(r.array()?);
    let mut payload = Reader(r.bytes(len)?);
    if xxh3_64(payload.0) != sum {
        return None;
    }
    let rec = UsageRecord::take(&mut payload)?;
    payload.0.is_empty().then_some((rec, r.0))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }
}

/// A value as the payload holds it.
trait Field: Sized {
    fn put(&self, out: &mut Vec<u8>);
    fn take(r: &mut Reader<'_>) -> Option<Self>;
}

macro_rules! le_integer {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn take(r: &mut Reader<'_>) -> Option<Self> {
                Some(<$t>::from_le_bytes(r.array()?))
            }
        }
    )*};
}
le_integer!(i32, u32, i64);

impl Field for bool {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn take(r: &mut Reader<'_>) -> Option<Self> {
        match r.array::<1>()? {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    u32::try_from(s.len()).unwrap_or(u32::MAX).put(out);
    out.extend_from_slice(s.as_bytes());
}

impl Field for String {
    fn put(&self, out: &mut Vec<u8>) {
        put_str(self, out);
    }
    fn take(r: &mut Reader<'_>) -> Option<Self> {
        let len = u32::take(r)? as usize;
        String::from_utf8(r.bytes(len)?.to_vec()).ok()
    }
}

/// Amounts as their micro-units.
macro_rules! micro_amount {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn put(&self, out: &mut Vec<u8>) {
                self.micros().put(out);
            }
            fn take(r: &mut Reader<'_>) -> Option<Self> {
                i64::take(r).map(<$t>::from_micros)
            }
        }
    )*};
}
micro_amount!(MicroCny, MicroUsd);

/// The outcome as its one spelling: a frame written by another version still reads back.
impl Field for Outcome {
    fn put(&self, out: &mut Vec<u8>) {
        put_str(self.as_str(), out);
    }
    fn take(r: &mut Reader<'_>) -> Option<Self> {
        String::take(r)?.parse().ok()
    }
}

impl Field for Uuid {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn take(r: &mut Reader<'_>) -> Option<Self> {
        Some(Uuid::from_bytes(r.array()?))
    }
}

impl Field for DateTime<Utc> {
    fn put(&self, out: &mut Vec<u8>) {
        self.timestamp().put(out);
        self.timestamp_subsec_nanos().put(out);
    }
    fn take(r: &mut Reader<'_>) -> Option<Self> {
        DateTime::from_timestamp(i64::take(r)?, u32::take(r)?)
    }
}

impl<T: Field> Field for Option<T> {
    fn put(&self, out: &mut Vec<u8>) {
        self.is_some().put(out);
        if let Some(v) = self {
            v.put(out);
        }
    }
    fn take(r: &mut Reader<'_>) -> Option<Self> {
        Some(if bool::take(r)? { Some(T::take(r)?) } else { None })
    }
}

impl Field for TokenUsage {
    fn put(&self, out: &mut Vec<u8>) {
        let TokenUsage { input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens } = self;
        for v in [input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens] {
            v.put(out);
        }
    }
    fn take(r: &mut Reader<'_>) -> Option<Self> {
        Some(TokenUsage {
            input_tokens: Field::take(r)?,
            output_tokens: Field::take(r)?,
            cache_write_5m_tokens: Field::take(r)?,
            cache_write_1h_tokens: Field::take(r)?,
            cache_read_tokens: Field::take(r)?,
        })
    }
}

impl Field for ServerToolUse {
    fn put(&self, out: &mut Vec<u8>) {
        let ServerToolUse { web_search_requests, web_fetch_requests } = self;
        web_search_requests.put(out);
        web_fetch_requests.put(out);
    }
    fn take(r: &mut Reader<'_>) -> Option<Self> {
        Some(ServerToolUse { web_search_requests: Field::take(r)?, web_fetch_requests: Field::take(r)? })
    }
}

// Every field, `off_plan` included (settlement needs it): destructured here, so that a field added
// to the record does not compile until it is spooled too; read back in the same order.
impl Field for UsageRecord {
    fn put(&self, out: &mut Vec<u8>) {
        let UsageRecord {
            id,
            created_at,
            user_id,
            key_id,
            channel,
            endpoint,
            requested_model,
            served_model,
            upstream_id,
            stream,
            status,
            error_type,
            outcome,
            attempts,
            tokens,
            server_tools,
            cost_micro_usd,
            charge_micros,
            held_micros,
            latency_ms,
            ttft_ms,
            affinity,
            off_plan,
        } = self;
        id.put(out);
        created_at.put(out);
        user_id.put(out);
        key_id.put(out);
        channel.put(out);
        endpoint.put(out);
        requested_model.put(out);
        served_model.put(out);
        upstream_id.put(out);
        stream.put(out);
        status.put(out);
        error_type.put(out);
        outcome.put(out);
        attempts.put(out);
        tokens.put(out);
        server_tools.put(out);
        cost_micro_usd.put(out);
        charge_micros.put(out);
        held_micros.put(out);
        latency_ms.put(out);
        ttft_ms.put(out);
        affinity.put(out);
        off_plan.put(out);
    }
    fn take(r: &mut Reader<'_>) -> Option<Self> {
        Some(UsageRecord {
            id: Field::take(r)?,
            created_at: Field::take(r)?,
            user_id: Field::take(r)?,
            key_id: Field::take(r)?,
            channel: Field::take(r)?,
            endpoint: Field::take(r)?,
            requested_model: Field::take(r)?,
            served_model: Field::take(r)?,
            upstream_id: Field::take(r)?,
            stream: Field::take(r)?,
            status: Field::take(r)?,
            error_type: Field::take(r)?,
            outcome: Field::take(r)?,
            attempts: Field::take(r)?,
            tokens: Field::take(r)?,
            server_tools: Field::take(r)?,
            cost_micro_usd: Field::take(r)?,
            charge_micros: Field::take(r)?,
            held_micros: Field::take(r)?,
            latency_ms: Field::take(r)?,
            ttft_ms: Field::take(r)?,
            affinity: Field::take(r)?,
            off_plan: Field::take(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64, full: bool) -> UsageRecord {
        UsageRecord {
            id: format!("req_{n:06}_é"),
            created_at: DateTime::from_timestamp(1_764_460_800 + n, 123_456_789).unwrap(),
            user_id: Uuid::from_u128(n as u128),
            key_id: full.then(|| Uuid::from_u128(7)),
            channel: "value".into(),
            endpoint: "messages".into(),
            requested_model: "the client's \"own\" text\n".into(),
            served_model: full.then(|| "claude-haiku-4-5-20251001".into()),
            upstream_id: full.then(|| Uuid::from_u128(9)),
            stream: full,
            status: 200,
            error_type: (!full).then(|| "api_error".into()),
            outcome: Outcome::Ok,
            attempts: 2,
            tokens: TokenUsage { input_tokens: n, output_tokens: -1, cache_write_5m_tokens: i64::MAX, cache_write_1h_tokens: i64::MIN, cache_read_tokens: 3 },
            server_tools: ServerToolUse { web_search_requests: 1, web_fetch_requests: 2 },
            cost_micro_usd: MicroUsd::from_micros(62),
            charge_micros: MicroCny::from_micros(451),
            held_micros: MicroCny::from_micros(400),
            latency_ms: i32::MAX,
            ttft_ms: full.then_some(3),
            affinity: !full,
            off_plan: full,
        }
    }

    #[test]
    fn records_read_back_exactly() {
        let written = vec![record(1, true), record(2, false)];
        let mut bytes = vec![];
        for r in &written {
            encode(r, &mut bytes);
        }
        assert_eq!(decode(&bytes), (written, 0));
    }

    #[test]
    fn a_segment_cut_anywhere_reads_as_the_records_before_the_cut() {
        let mut bytes = vec![];
        encode(&record(1, true), &mut bytes);
        let first = bytes.len();
        encode(&record(2, false), &mut bytes);
        for cut in 0..bytes.len() {
            let (records, left) = decode(&bytes[..cut]);
            let whole = usize::from(cut >= first);
            assert_eq!((records.len(), left), (whole, cut - whole * first), "cut at {cut}");
        }
    }

    #[test]
    fn damaged_bytes_are_refused_not_misread() {
        let mut bytes = vec![];
        encode(&record(1, true), &mut bytes);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5a;
            assert_eq!(decode(&damaged).0, vec![], "byte {at} flipped");
        }
        assert_eq!(decode(&[0xff; 64]), (vec![], 64), "a frame longer than the segment");
    }
}
