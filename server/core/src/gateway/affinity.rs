//! Cache-aware routing: the turns of one conversation go to the upstream that holds its prompt
//! cache (a cache read costs 0.1× input, a miss re-writes the prefix at 1.25×).
//!
//! * **The conversation** is named by the client when it can be: Claude Code's session
//!   (`X-Claude-Code-Session-Id`, or `metadata.user_id` ending in `_session_<id>`, or a JSON
//!   `user_id` with a `session_id`). Otherwise by its beginning — `system`, `tools` and the first
//!   message, hashed as they appear in the body: that part is the same on every turn of a
//!   conversation while the cached prefix grows behind it. The pieces are captured by the one
//!   parse of the request head (`RequestHead`), never a second parse. The key is mixed with the
//!   API key's id, so two customers never share a binding.
//! * **The choice** is deterministic: weighted rendezvous hashing of the conversation over the
//!   channel's upstreams of the highest priority (score `-ln(u)/weight`, `u` from the hash of
//!   conversation and upstream; the lowest wins). Every instance picks the same upstream with no
//!   shared state and no round trip, new conversations spread by weight, and adding or removing an
//!   upstream moves only the conversations that must move.
//! * **Moves** win over stickiness: an upstream that is breaker-open, saturated past the channel's
//!   `affinity_wait_ms`, or fails is skipped as before, and another answers. The conversation is
//!   then bound to the one that answered (its cache is there now) by an override: in memory at
//!   once, written to `affinity_overrides` and announced by NOTIFY off the request path, so other
//!   instances follow. An override lasts 5 minutes from its last use (1 hour when the request uses
//!   the 1-hour cache TTL), like the cache it follows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64_with_seed, Xxh3};

/// How long a cache (and so an override) lives after its last use.
pub(crate) const TTL_5M: Duration = Duration::from_secs(5 * 60);
pub(crate) const TTL_1H: Duration = Duration::from_secs(60 * 60);

/// A conversation as the body or headers name it (not yet tied to an API key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conversation(u128);

impl Conversation {
    /// From a session id the client sends.
    pub(crate) fn session(id: &str) -> Conversation {
        let mut h = Xxh3::new();
        h.update(b"session\0");
        h.update(id.as_bytes());
        Conversation(h.digest128())
    }

    /// From the beginning of the prompt: the raw bytes of `system`, `tools` and the first message.
    /// The first message carries the moving `cache_control` breakpoint on the first turn only
    /// (clients mark the last message), so it is read without its `cache_control` members and
    /// commas; `system` and `tools` are hashed as they are (their breakpoints do not move).
    pub(crate) fn prefix(system: &[u8], tools: &[u8], first_message: &[u8]) -> Conversation {
        let mut h = Xxh3::new();
        for part in [system, tools] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        hash_without_cache_control(&mut h, first_message);
        Conversation(h.digest128())
    }

    /// The conversation of one API key.
    pub(crate) fn of_key(self, key_id: Uuid) -> ConvKey {
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(key_id.as_bytes());
        b[16..].copy_from_slice(&self.0.to_le_bytes());
        ConvKey(xxh3_128(&b))
    }
}

/// Feeds `raw` (JSON) to `h` without its `"cache_control"` members and without commas outside
/// strings, so that a message hashes alike with and without its breakpoint. One pass with
/// `memchr` jumps; no parse.
fn hash_without_cache_control(h: &mut Xxh3, raw: &[u8]) {
    const KEY: &[u8] = b"\"cache_control\"";
    let mut fed = 0;
    let mut i = 0;
    while let Some(j) = memchr::memchr2(b'"', b',', &raw[i..]).map(|j| i + j) {
        if raw[j] == b',' {
            h.update(&raw[fed..j]);
            fed = j + 1;
            i = j + 1;
            continue;
        }
        let end = string_end(raw, j);
        if &raw[j..end] == KEY {
            h.update(&raw[fed..j]);
            let mut k = end;
            while k < raw.len() && (raw[k] == b':' || raw[k].is_ascii_whitespace()) {
                k += 1;
            }
            fed = value_end(raw, k);
            i = fed;
        } else {
            i = end;
        }
    }
    h.update(&raw[fed.min(raw.len())..]);
}

/// The index just past the JSON string that starts at `start` (a quote).
fn string_end(raw: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(j) = memchr::memchr2(b'"', b'\\', &raw[i.min(raw.len())..]).map(|j| i + j) {
        if raw[j] == b'"' {
            return j + 1;
        }
        i = j + 2;
    }
    raw.len()
}

/// The index just past the JSON value that starts at `start`.
fn value_end(raw: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < raw.len() {
        match raw[i] {
            b'"' => {
                i = string_end(raw, i);
                if depth == 0 {
                    return i;
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth <= 1 {
                    return i + 1;
                }
                depth -= 1;
            }
            b',' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    raw.len()
}

/// The session id inside Claude Code's `metadata.user_id`: `…_session_<id>`, or a JSON object
/// with a `session_id`.
pub(crate) fn session_of_user_id(user_id: &str) -> Option<&str> {
    if let Some(i) = user_id.rfind("_session_") {
        let id = &user_id[i + "_session_".len()..];
        return (!id.is_empty()).then_some(id);
    }
    let start = user_id.find("\"session_id\"")?;
    let rest = &user_id[start + "\"session_id\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let id = &rest[..rest.find('"')?];
    (!id.is_empty()).then_some(id)
}

/// A conversation of one API key: the routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConvKey(pub(crate) u128);

impl ConvKey {
    /// Rendezvous score of an upstream for this conversation: lower wins. With `u` uniform in
    /// (0, 1), `-ln(u)/w` is exponential with rate `w`, so the minimum over upstreams falls on
    /// each with probability proportional to its weight.
    pub(crate) fn score(self, upstream: Uuid, weight: i32) -> f64 {
        let mut b = [0u8; 16];
        b.copy_from_slice(upstream.as_bytes());
        let h = xxh3_64_with_seed(&b, (self.0 as u64) ^ ((self.0 >> 64) as u64));
        // 53 bits into (0, 1]
        let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
        -u.ln() / weight.max(1) as f64
    }

    pub(crate) fn to_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<ConvKey> {
        Some(ConvKey(u128::from_le_bytes(b.try_into().ok()?)))
    }
}

#[derive(Debug, Clone, Copy)]
struct Binding {
    upstream: Uuid,
    user: Uuid,
    /// Unix milliseconds: the same clock on every instance
    expires_ms: i64,
}

/// Conversations that had to move away from their rendezvous choice, by key.
#[derive(Default)]
pub(crate) struct Overrides {
    map: Mutex<HashMap<ConvKey, Binding>>,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Overrides {
    /// The upstream a conversation was moved to, while the move lasts.
    pub(crate) fn get(&self, conv: ConvKey) -> Option<Uuid> {
        let now = now_ms();
        let mut m = self.map.lock().unwrap();
        match m.get(&conv) {
            Some(b) if b.expires_ms > now => Some(b.upstream),
            Some(_) => {
                m.remove(&conv);
                None
            }
            None => None,
        }
    }

    /// Binds a conversation to an upstream until `expires_ms`.
    pub(crate) fn set(&self, conv: ConvKey, user: Uuid, upstream: Uuid, expires_ms: i64) {
        let mut m = self.map.lock().unwrap();
        if expires_ms > now_ms() {
            m.insert(conv, Binding { upstream, user, expires_ms });
        } else {
            m.remove(&conv);
        }
        // expired bindings go when the table grows: no timer on the request path
        if m.len() > 4096 && m.len().is_power_of_two() {
            let now = now_ms();
            m.retain(|_, b| b.expires_ms > now);
        }
    }

    /// The cache was used again: the binding lives on (this instance's copy).
    pub(crate) fn touch(&self, conv: ConvKey, ttl: Duration) {
        if let Some(b) = self.map.lock().unwrap().get_mut(&conv) {
            b.expires_ms = b.expires_ms.max(now_ms() + ttl.as_millis() as i64);
        }
    }

    pub(crate) fn remove(&self, conv: ConvKey) -> bool {
        self.map.lock().unwrap().remove(&conv).is_some()
    }

    /// Forgets every binding (of one customer).
    pub(crate) fn clear(&self, user: Option<Uuid>) {
        let mut m = self.map.lock().unwrap();
        match user {
            Some(u) => m.retain(|_, b| b.user != u),
            None => m.clear(),
        }
    }
}

/// The NOTIFY payload announcing a move (`affinity:set:<conv hex>:<user>:<upstream>:<expiry ms>`).
pub(crate) fn set_payload(conv: ConvKey, user: Uuid, upstream: Uuid, expires_ms: i64) -> String {
    format!("affinity:set:{}:{user}:{upstream}:{expires_ms}", hex::encode(conv.to_bytes()))
}

/// Applies an `affinity:` NOTIFY payload (the part after `affinity:`).
pub(crate) fn apply_notify(o: &Overrides, payload: &str) {
    let mut parts = payload.split(':');
    match parts.next() {
        Some("set") => {
            let conv = parts.next().and_then(|h| hex::decode(h).ok()).and_then(|b| ConvKey::from_bytes(&b));
            let user = parts.next().and_then(|u| u.parse::<Uuid>().ok());
            let upstream = parts.next().and_then(|u| u.parse::<Uuid>().ok());
            let expires = parts.next().and_then(|e| e.parse::<i64>().ok());
            if let (Some(c), Some(u), Some(up), Some(e)) = (conv, user, upstream, expires) {
                o.set(c, u, up, e);
            }
        }
        Some("clear") => o.clear(parts.next().and_then(|u| u.parse::<Uuid>().ok())),
        _ => {}
    }
}

/// Loads the overrides still running (at start and after a lost NOTIFY connection).
pub(crate) async fn load(pool: &sqlx::PgPool, o: &Overrides) -> Result<(), sqlx::Error> {
    let rows: Vec<(Vec<u8>, Uuid, Uuid, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT conversation, user_id, upstream_id, expires_at FROM affinity_overrides WHERE expires_at > now()",
    )
    .fetch_all(pool)
    .await?;
    o.clear(None);
    for (conv, user, upstream, expires) in rows {
        if let Some(c) = ConvKey::from_bytes(&conv) {
            o.set(c, user, upstream, expires.timestamp_millis());
        }
    }
    Ok(())
}

/// Writes a move and tells the other instances (off the request path).
pub(crate) async fn persist(pool: &sqlx::PgPool, conv: ConvKey, user: Uuid, upstream: Uuid, expires_ms: i64) -> Result<(), sqlx::Error> {
    let expires = chrono::DateTime::from_timestamp_millis(expires_ms).unwrap_or_else(chrono::Utc::now);
    sqlx::query(
        "WITH up AS (INSERT INTO affinity_overrides (conversation, user_id, upstream_id, expires_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (conversation) DO UPDATE SET upstream_id = EXCLUDED.upstream_id, expires_at = EXCLUDED.expires_at) \
         SELECT pg_notify($5, $6)",
    )
    .bind(&conv.to_bytes()[..])
    .bind(user)
    .bind(upstream)
    .bind(expires)
    .bind(super::NOTIFY_CHANNEL)
    .bind(set_payload(conv, user, upstream, expires_ms))
    .execute(pool)
    .await?;
    Ok(())
}

/// A conversation went back to its rendezvous choice: its override is no longer needed.
pub(crate) async fn forget(pool: &sqlx::PgPool, conv: ConvKey) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM affinity_overrides WHERE conversation = $1").bind(&conv.to_bytes()[..]).execute(pool).await?;
    Ok(())
}

/// Staff: forget the bindings of one customer, or of everyone (audited in the same transaction);
/// every instance follows at once. Conversations go back to their rendezvous choice. Returns how
/// many stored overrides went.
pub async fn clear(pool: &sqlx::PgPool, staff_id: Uuid, user: Option<Uuid>) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("DELETE FROM affinity_overrides WHERE $1::uuid IS NULL OR user_id = $1")
        .bind(user)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let payload = match user {
        Some(u) => format!("affinity:clear:{u}"),
        None => "affinity:clear".to_string(),
    };
    sqlx::query("SELECT pg_notify($1, $2)").bind(super::NOTIFY_CHANNEL).bind(payload).execute(&mut *tx).await?;
    let target = user.map_or_else(|| "affinity:all".to_string(), |u| format!("user:{u}"));
    crate::billing::audit::record(&mut tx, staff_id, "affinity.clear", &target, serde_json::json!({"overrides": n})).await?;
    tx.commit().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_conversations_by_weight() {
        let ups: Vec<(Uuid, i32)> = vec![(Uuid::new_v4(), 1), (Uuid::new_v4(), 2), (Uuid::new_v4(), 1)];
        let key = Uuid::new_v4();
        let mut counts = [0u32; 3];
        let n = 20_000;
        for i in 0..n {
            let conv = Conversation::session(&format!("conversation-{i}")).of_key(key);
            let best = (0..3)
                .min_by(|&a, &b| conv.score(ups[a].0, ups[a].1).partial_cmp(&conv.score(ups[b].0, ups[b].1)).unwrap())
                .unwrap();
            counts[best] += 1;
        }
        let share = |c: u32| c as f64 / n as f64;
        assert!((share(counts[0]) - 0.25).abs() < 0.015, "{counts:?}");
        assert!((share(counts[1]) - 0.50).abs() < 0.015, "{counts:?}");
        assert!((share(counts[2]) - 0.25).abs() < 0.015, "{counts:?}");
    }

    #[test]
    fn a_removed_upstream_moves_only_its_own_conversations() {
        let ups: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let key = Uuid::new_v4();
        let best = |conv: ConvKey, set: &[Uuid]| *set.iter().min_by(|a, b| conv.score(**a, 1).partial_cmp(&conv.score(**b, 1)).unwrap()).unwrap();
        for i in 0..2000 {
            let conv = Conversation::session(&i.to_string()).of_key(key);
            let before = best(conv, &ups);
            let after = best(conv, &ups[..3]);
            if before != ups[3] {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn sessions_are_read_from_claude_code_user_ids() {
        assert_eq!(
            session_of_user_id("user_abc_account_1f2e_session_5e6b7f4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
            Some("5e6b7f4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b")
        );
        assert_eq!(session_of_user_id(r#"{"device_id":"d1","session_id": "s-42"}"#), Some("s-42"));
        assert_eq!(session_of_user_id("plain-user"), None);
        assert_eq!(session_of_user_id("x_session_"), None);
    }

    #[test]
    fn a_moving_breakpoint_does_not_change_the_conversation() {
        let first_turn = br#"{"role":"user","content":[{"type":"text","text":"hi, \"cache_control\" here","cache_control":{"type":"ephemeral","ttl":"1h"}}]}"#;
        let later_turn = br#"{"role":"user","content":[{"type":"text","text":"hi, \"cache_control\" here"}]}"#;
        let other = br#"{"role":"user","content":[{"type":"text","text":"hi, \"cache_control\" there"}]}"#;
        let key = |m: &[u8]| Conversation::prefix(b"[]", b"", m);
        assert_eq!(key(first_turn), key(later_turn));
        assert_ne!(key(later_turn), key(other));
        // malformed bytes never panic
        for cut in 0..first_turn.len() {
            let _ = key(&first_turn[..cut]);
        }
    }

    #[test]
    fn keys_separate_customers_and_conversations() {
        let a = Conversation::session("s");
        assert_ne!(a.of_key(Uuid::new_v4()), a.of_key(Uuid::new_v4()));
        assert_ne!(Conversation::prefix(b"s", b"", b"m"), Conversation::prefix(b"", b"s", b"m"));
    }

    #[test]
    fn overrides_expire_and_clear_per_customer() {
        let o = Overrides::default();
        let (c1, c2) = (Conversation::session("1").of_key(Uuid::nil()), Conversation::session("2").of_key(Uuid::nil()));
        let (u1, u2, up) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        o.set(c1, u1, up, now_ms() + 60_000);
        o.set(c2, u2, up, now_ms() - 1);
        assert_eq!(o.get(c1), Some(up));
        assert_eq!(o.get(c2), None, "expired");
        apply_notify(&o, &set_payload(c2, u2, up, now_ms() + 60_000)["affinity:".len()..]);
        assert_eq!(o.get(c2), Some(up));
        o.clear(Some(u1));
        assert_eq!((o.get(c1), o.get(c2)), (None, Some(up)));
        apply_notify(&o, "clear");
        assert_eq!(o.get(c2), None);
    }
}
