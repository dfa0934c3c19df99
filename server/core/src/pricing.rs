//! Pure pricing: tokens by kind × the model's list prices (micro-USD per million tokens), plus
//! server-tool requests × their price (micro-USD per thousand requests), gives an exact cost in
//! pico-USD (10⁻¹² USD, an `i128`); that exact cost × the channel rate (micro-CNY per USD) gives
//! the charge. Rounding (see [`crate::money::div_round_half_up`]) happens once per request on each
//! result:
//!
//! ```text
//! exact_pico_usd = Σ tokens_k × price_k                       (price_k in micro-USD / MTok)
//!                + Σ requests_t × price_t × 1000              (price_t in micro-USD / 1000 requests)
//! cost_micro_usd = round_half_up(exact_pico_usd / 10⁶)
//! charge_micros  = round_half_up(exact_pico_usd × rate_micros_per_usd / 10¹²)
//! ```
//! The charge is computed from the exact cost, not from the rounded one.
//!
//! Cache pricing follows Anthropic: 5-minute writes 1.25× input, 1-hour writes 2× input, reads
//! 0.1× input (the catalogue stores each price explicitly, so staff can follow list changes).
//! When the usage has no `cache_creation` split, every cache write is priced at the 5-minute rate.
//! A model with a long-context threshold prices a whole request at its long-context prices when
//! the request's input (uncached + cache writes + cache reads) exceeds the threshold.

use crate::money::{div_round_half_up, CnyPerUsd, MicroCny, MicroUsd};
use serde::{Deserialize, Serialize};

/// Token prices, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TokenPrices {
    pub input: MicroUsd,
    pub output: MicroUsd,
    pub cache_write_5m: MicroUsd,
    pub cache_write_1h: MicroUsd,
    pub cache_read: MicroUsd,
}

/// Every list price of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ModelPrices {
    pub tokens: TokenPrices,
    /// Prices of a request whose input exceeds `threshold_tokens` (whole request).
    pub long_context: Option<LongContext>,
    /// USD per 1,000 web search requests
    pub web_search_per_1k: MicroUsd,
    /// USD per 1,000 web fetch requests
    pub web_fetch_per_1k: MicroUsd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongContext {
    pub threshold_tokens: i64,
    pub prices: TokenPrices,
}

impl TokenPrices {
    /// Anthropic's standard multipliers from input and output prices (USD / MTok).
    pub fn standard(input: MicroUsd, output: MicroUsd) -> Self {
        let i = input.micros();
        TokenPrices {
            input,
            output,
            cache_write_5m: MicroUsd::from_micros(i * 5 / 4),
            cache_write_1h: MicroUsd::from_micros(i * 2),
            cache_read: MicroUsd::from_micros(i / 10),
        }
    }

    /// The highest per-token price of anything that counts as input.
    pub fn max_input(&self) -> MicroUsd {
        self.input.max(self.cache_write_5m).max(self.cache_write_1h).max(self.cache_read)
    }

    /// Element-wise maximum.
    pub fn max(self, o: TokenPrices) -> TokenPrices {
        TokenPrices {
            input: self.input.max(o.input),
            output: self.output.max(o.output),
            cache_write_5m: self.cache_write_5m.max(o.cache_write_5m),
            cache_write_1h: self.cache_write_1h.max(o.cache_write_1h),
            cache_read: self.cache_read.max(o.cache_read),
        }
    }
}

impl ModelPrices {
    /// Token prices only: no long-context rates, no server-tool prices.
    pub fn flat(tokens: TokenPrices) -> Self {
        ModelPrices { tokens, ..Default::default() }
    }

    /// The token prices that apply to a request with `input_tokens` of input of every kind.
    pub fn for_input(&self, input_tokens: i64) -> &TokenPrices {
        match &self.long_context {
            Some(lc) if input_tokens > lc.threshold_tokens => &lc.prices,
            _ => &self.tokens,
        }
    }

    /// Element-wise maximum (for holds that must cover a fallback model too). Long-context prices
    /// are kept from either side, at the lower threshold.
    pub fn max(self, o: ModelPrices) -> ModelPrices {
        let long_context = match (self.long_context, o.long_context) {
            (Some(a), Some(b)) => Some(LongContext {
                threshold_tokens: a.threshold_tokens.min(b.threshold_tokens),
                prices: a.prices.max(b.prices),
            }),
            (a, b) => a.or(b),
        };
        ModelPrices {
            tokens: self.tokens.max(o.tokens),
            long_context,
            web_search_per_1k: self.web_search_per_1k.max(o.web_search_per_1k),
            web_fetch_per_1k: self.web_fetch_per_1k.max(o.web_fetch_per_1k),
        }
    }
}

/// Tokens by kind, as billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, sqlx::FromRow)]
pub struct TokenUsage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_write_5m_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub cache_read_tokens: i64,
}

impl TokenUsage {
    pub fn is_zero(&self) -> bool {
        *self == TokenUsage::default()
    }

    /// Input of every kind (what a long-context threshold is compared with).
    pub fn total_input(&self) -> i64 {
        self.input_tokens + self.cache_write_5m_tokens + self.cache_write_1h_tokens + self.cache_read_tokens
    }
}

/// Requests of Anthropic's server tools (`usage.server_tool_use`), as billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, sqlx::FromRow)]
pub struct ServerToolUse {
    pub web_search_requests: i64,
    pub web_fetch_requests: i64,
}

impl ServerToolUse {
    pub fn is_zero(&self) -> bool {
        *self == ServerToolUse::default()
    }
}

/// The result of pricing one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Price {
    pub cost_micro_usd: MicroUsd,
    pub charge_micros: MicroCny,
}

/// Exact cost in pico-USD.
pub fn exact_cost_pico_usd(u: &TokenUsage, tools: &ServerToolUse, p: &ModelPrices) -> i128 {
    let t = |n: i64| n.max(0) as i128;
    let m = |price: MicroUsd| price.micros() as i128;
    let tp = p.for_input(u.total_input());
    t(u.input_tokens) * m(tp.input)
        + t(u.output_tokens) * m(tp.output)
        + t(u.cache_write_5m_tokens) * m(tp.cache_write_5m)
        + t(u.cache_write_1h_tokens) * m(tp.cache_write_1h)
        + t(u.cache_read_tokens) * m(tp.cache_read)
        // micro-USD per 1000 requests = 1000 pico-USD per request per micro-USD
        + t(tools.web_search_requests) * m(p.web_search_per_1k) * 1000
        + t(tools.web_fetch_requests) * m(p.web_fetch_per_1k) * 1000
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(0, i64::MAX as i128) as i64
}

/// Cost (micro-USD) and charge (micro-CNY) of a request.
pub fn price(u: &TokenUsage, tools: &ServerToolUse, p: &ModelPrices, rate: CnyPerUsd) -> Price {
    let pico = exact_cost_pico_usd(u, tools, p);
    Price {
        cost_micro_usd: MicroUsd::from_micros(clamp_i64(div_round_half_up(pico, 1_000_000))),
        charge_micros: MicroCny::from_micros(clamp_i64(div_round_half_up(pico * rate.micros().max(0) as i128, 1_000_000_000_000))),
    }
}

/// The hold reserved before forwarding: every input token the body can carry at the dearest input
/// price (a token is never shorter than one byte of the body, plus a margin for the system prompt
/// the API adds for tools), at the long-context prices when that many tokens cross the threshold,
/// and `max_tokens` of output. Input the body does not carry (documents and images by URL, web
/// fetch) and server tools are not foreseen: the charge can exceed the hold (see the README,
/// "Money").
pub fn estimate_hold(body_len: usize, max_tokens: u64, p: &ModelPrices, rate: CnyPerUsd) -> MicroCny {
    let pico = worst_case_pico_usd(body_len, max_tokens, p);
    // round up: a hold must cover the charge
    let den: i128 = 1_000_000_000_000;
    let v = (pico * rate.micros().max(0) as i128 + den - 1) / den;
    MicroCny::from_micros(clamp_i64(v).max(1))
}

/// The same worst case at list price, in micro-USD (what a plan window holds for the request).
pub fn estimate_hold_usd(body_len: usize, max_tokens: u64, p: &ModelPrices) -> MicroUsd {
    let v = (worst_case_pico_usd(body_len, max_tokens, p) + 999_999) / 1_000_000;
    MicroUsd::from_micros(clamp_i64(v).max(1))
}

fn worst_case_pico_usd(body_len: usize, max_tokens: u64, p: &ModelPrices) -> i128 {
    let input = body_len as i128 + 4096;
    let tp = p.for_input(input.min(i64::MAX as i128) as i64);
    input * tp.max_input().micros() as i128 + (max_tokens.min(10_000_000) as i128) * tp.output.micros() as i128
}

/// Usage as Anthropic reports it (JSON `usage`, `message_start.message.usage`,
/// `message_delta.usage`). Every field is optional: later reports replace earlier values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct UsageReport {
    #[serde(default)]
    pub input_tokens: Option<i64>,
    #[serde(default)]
    pub output_tokens: Option<i64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<i64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<i64>,
    #[serde(default)]
    pub cache_creation: Option<CacheCreation>,
    #[serde(default)]
    pub server_tool_use: Option<ServerToolReport>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ServerToolReport {
    #[serde(default)]
    pub web_search_requests: Option<i64>,
    #[serde(default)]
    pub web_fetch_requests: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct CacheCreation {
    #[serde(default)]
    pub ephemeral_5m_input_tokens: Option<i64>,
    #[serde(default)]
    pub ephemeral_1h_input_tokens: Option<i64>,
}

impl UsageReport {
    /// Cumulative semantics: a later value replaces an earlier one, values are never added.
    pub fn merge(&mut self, later: &UsageReport) {
        fn m(a: &mut Option<i64>, b: Option<i64>) {
            if b.is_some() {
                *a = b;
            }
        }
        m(&mut self.input_tokens, later.input_tokens);
        m(&mut self.output_tokens, later.output_tokens);
        m(&mut self.cache_creation_input_tokens, later.cache_creation_input_tokens);
        m(&mut self.cache_read_input_tokens, later.cache_read_input_tokens);
        if let Some(lc) = later.cache_creation {
            let c = self.cache_creation.get_or_insert_with(CacheCreation::default);
            m(&mut c.ephemeral_5m_input_tokens, lc.ephemeral_5m_input_tokens);
            m(&mut c.ephemeral_1h_input_tokens, lc.ephemeral_1h_input_tokens);
        }
        if let Some(ls) = later.server_tool_use {
            let s = self.server_tool_use.get_or_insert_with(ServerToolReport::default);
            m(&mut s.web_search_requests, ls.web_search_requests);
            m(&mut s.web_fetch_requests, ls.web_fetch_requests);
        }
    }

    /// Server-tool requests as billed.
    pub fn server_tools(&self) -> ServerToolUse {
        let s = self.server_tool_use.unwrap_or_default();
        ServerToolUse {
            web_search_requests: s.web_search_requests.unwrap_or(0).max(0),
            web_fetch_requests: s.web_fetch_requests.unwrap_or(0).max(0),
        }
    }

    /// Tokens by billed kind. With a `cache_creation` split, 1-hour writes are priced as such and
    /// any remainder of `cache_creation_input_tokens` at the 5-minute rate.
    pub fn tokens(&self) -> TokenUsage {
        let total_writes = self.cache_creation_input_tokens.unwrap_or(0).max(0);
        let (w5, w1) = match self.cache_creation {
            Some(c) => {
                let w1 = c.ephemeral_1h_input_tokens.unwrap_or(0).max(0);
                let w5 = c.ephemeral_5m_input_tokens.unwrap_or(0).max(0);
                let w5 = w5.max(total_writes - w1);
                (w5, w1)
            }
            None => (total_writes, 0),
        };
        TokenUsage {
            input_tokens: self.input_tokens.unwrap_or(0).max(0),
            output_tokens: self.output_tokens.unwrap_or(0).max(0),
            cache_write_5m_tokens: w5,
            cache_write_1h_tokens: w1,
            cache_read_tokens: self.cache_read_input_tokens.unwrap_or(0).max(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sonnet() -> ModelPrices {
        ModelPrices::flat(TokenPrices::standard(MicroUsd::from_micros(3_000_000), MicroUsd::from_micros(15_000_000)))
    }

    const NO_TOOLS: ServerToolUse = ServerToolUse { web_search_requests: 0, web_fetch_requests: 0 };

    #[test]
    fn standard_multipliers() {
        let p = sonnet().tokens;
        assert_eq!(p.cache_write_5m, MicroUsd::from_micros(3_750_000));
        assert_eq!(p.cache_write_1h, MicroUsd::from_micros(6_000_000));
        assert_eq!(p.cache_read, MicroUsd::from_micros(300_000));
    }

    #[test]
    fn plain_input_output() {
        // 1000 in × $3/M + 500 out × $15/M = $0.003 + $0.0075 = $0.0105
        let u = TokenUsage { input_tokens: 1000, output_tokens: 500, ..Default::default() };
        let p = price(&u, &NO_TOOLS, &sonnet(), CnyPerUsd::from_micros(1_000_000));
        assert_eq!(p.cost_micro_usd.micros(), 10_500);
        assert_eq!(p.charge_micros.micros(), 10_500);
        // value channel ¥0.6/$ → ¥0.0063
        assert_eq!(price(&u, &NO_TOOLS, &sonnet(), CnyPerUsd::from_micros(600_000)).charge_micros.micros(), 6_300);
        // stable ¥5/$ → ¥0.0525
        assert_eq!(price(&u, &NO_TOOLS, &sonnet(), CnyPerUsd::from_micros(5_000_000)).charge_micros.micros(), 52_500);
    }

    #[test]
    fn cache_kinds_priced_separately() {
        let u = TokenUsage {
            input_tokens: 10,
            output_tokens: 20,
            cache_write_5m_tokens: 1000,
            cache_write_1h_tokens: 2000,
            cache_read_tokens: 10_000,
        };
        // 10×3 + 20×15 + 1000×3.75 + 2000×6 + 10000×0.3 = 30+300+3750+12000+3000 = 19080 µ$
        let p = price(&u, &NO_TOOLS, &sonnet(), CnyPerUsd::from_micros(1_000_000));
        assert_eq!(p.cost_micro_usd.micros(), 19_080);
        assert_eq!(p.charge_micros.micros(), 19_080);
    }

    #[test]
    fn rounding_once_half_up() {
        // Haiku 5.5: $0.10/M in → 1 token = 0.1 µ$. 5 tokens = 0.5 µ$ → rounds up to 1.
        let h = ModelPrices::flat(TokenPrices { cache_read: MicroUsd::from_micros(10_000), ..TokenPrices::standard(MicroUsd::from_micros(100_000), MicroUsd::from_micros(500_000)) });
        let u = TokenUsage { input_tokens: 5, ..Default::default() };
        assert_eq!(price(&u, &NO_TOOLS, &h, CnyPerUsd::from_micros(1_000_000)), Price { cost_micro_usd: MicroUsd::from_micros(1), charge_micros: MicroCny::from_micros(1) });
        let u = TokenUsage { input_tokens: 4, ..Default::default() };
        assert_eq!(price(&u, &NO_TOOLS, &h, CnyPerUsd::from_micros(1_000_000)), Price { cost_micro_usd: MicroUsd::from_micros(0), charge_micros: MicroCny::from_micros(0) });
        // charge uses the exact cost: 7 tokens = 0.7 µ$, ×5 = 3.5 → 4 µ¥ (not round(0.7)=1 ×5 = 5)
        let u = TokenUsage { input_tokens: 7, ..Default::default() };
        assert_eq!(price(&u, &NO_TOOLS, &h, CnyPerUsd::from_micros(5_000_000)), Price { cost_micro_usd: MicroUsd::from_micros(1), charge_micros: MicroCny::from_micros(4) });
        // cache reads at 0.01/M: 100 tokens = 1 µ$
        let u = TokenUsage { cache_read_tokens: 100, ..Default::default() };
        assert_eq!(price(&u, &NO_TOOLS, &h, CnyPerUsd::from_micros(1_000_000)).cost_micro_usd.micros(), 1);
    }

    #[test]
    fn report_merge_is_cumulative_not_additive() {
        let mut r: UsageReport = serde_json::from_str(
            r#"{"input_tokens":100,"cache_creation_input_tokens":50,"cache_read_input_tokens":7,"output_tokens":1,
                "cache_creation":{"ephemeral_5m_input_tokens":20,"ephemeral_1h_input_tokens":30}}"#,
        )
        .unwrap();
        r.merge(&serde_json::from_str(r#"{"output_tokens":40}"#).unwrap());
        r.merge(&serde_json::from_str(r#"{"output_tokens":77,"input_tokens":100}"#).unwrap());
        assert_eq!(
            r.tokens(),
            TokenUsage {
                input_tokens: 100,
                output_tokens: 77,
                cache_write_5m_tokens: 20,
                cache_write_1h_tokens: 30,
                cache_read_tokens: 7
            }
        );
    }

    #[test]
    fn cache_writes_without_split_are_5m() {
        let r: UsageReport = serde_json::from_str(r#"{"input_tokens":1,"cache_creation_input_tokens":500,"output_tokens":2}"#).unwrap();
        let t = r.tokens();
        assert_eq!((t.cache_write_5m_tokens, t.cache_write_1h_tokens), (500, 0));
        // split that covers only the 1h part: remainder is 5m
        let r: UsageReport = serde_json::from_str(
            r#"{"cache_creation_input_tokens":500,"cache_creation":{"ephemeral_1h_input_tokens":200}}"#,
        )
        .unwrap();
        let t = r.tokens();
        assert_eq!((t.cache_write_5m_tokens, t.cache_write_1h_tokens), (300, 200));
    }

    #[test]
    fn hold_covers_worst_case() {
        let p = sonnet();
        let body = 2000usize;
        let hold = estimate_hold(body, 1000, &p, CnyPerUsd::from_micros(5_000_000));
        let worst = TokenUsage { cache_write_1h_tokens: body as i64 + 4096, output_tokens: 1000, ..Default::default() };
        assert!(hold >= price(&worst, &NO_TOOLS, &p, CnyPerUsd::from_micros(5_000_000)).charge_micros);
        assert!(hold > MicroCny::from_micros(0));
        assert!(estimate_hold_usd(body, 1000, &p) >= price(&worst, &NO_TOOLS, &p, CnyPerUsd::from_micros(5_000_000)).cost_micro_usd);
    }

    fn sonnet_long_context() -> ModelPrices {
        ModelPrices {
            long_context: Some(LongContext { threshold_tokens: 200_000, prices: TokenPrices::standard(MicroUsd::from_micros(6_000_000), MicroUsd::from_micros(22_500_000)) }),
            web_search_per_1k: MicroUsd::from_micros(10_000_000),
            ..sonnet()
        }
    }

    #[test]
    fn long_context_prices_the_whole_request_above_the_threshold() {
        let p = sonnet_long_context();
        // exactly at the threshold: standard prices
        let at = TokenUsage { input_tokens: 100_000, cache_read_tokens: 100_000, output_tokens: 1000, ..Default::default() };
        // 100k×3 + 100k×0.3 + 1000×15 = 345 000 µ$
        assert_eq!(price(&at, &NO_TOOLS, &p, CnyPerUsd::from_micros(1_000_000)).cost_micro_usd.micros(), 345_000);
        // one token more (a cache write counts as input): everything at long-context prices
        let above = TokenUsage { cache_write_5m_tokens: 1, ..at };
        // 100k×6 + 100k×0.6 + 1×7.5 + 1000×22.5 = 682 507.5 → 682 508 µ$
        assert_eq!(price(&above, &NO_TOOLS, &p, CnyPerUsd::from_micros(1_000_000)).cost_micro_usd.micros(), 682_508);
    }

    #[test]
    fn server_tools_are_priced_per_request() {
        let p = sonnet_long_context();
        let u = TokenUsage { input_tokens: 1000, output_tokens: 100, ..Default::default() };
        let tools = ServerToolUse { web_search_requests: 3, web_fetch_requests: 2 };
        // 1000×3 + 100×15 + 3 × $0.01 = 3000 + 1500 + 30 000 µ$ (fetches are free by default)
        assert_eq!(price(&u, &tools, &p, CnyPerUsd::from_micros(1_000_000)).cost_micro_usd.micros(), 34_500);
        let r: UsageReport = serde_json::from_str(r#"{"server_tool_use":{"web_search_requests":2}}"#).unwrap();
        let mut r2 = r;
        r2.merge(&serde_json::from_str(r#"{"server_tool_use":{"web_search_requests":5,"web_fetch_requests":1}}"#).unwrap());
        assert_eq!(r2.server_tools(), ServerToolUse { web_search_requests: 5, web_fetch_requests: 1 });
    }

    #[test]
    fn hold_of_a_long_body_uses_long_context_prices() {
        let p = sonnet_long_context();
        let body = 300_000usize;
        let hold = estimate_hold(body, 1000, &p, CnyPerUsd::from_micros(1_000_000));
        let worst = TokenUsage { cache_write_1h_tokens: body as i64 + 4096, output_tokens: 1000, ..Default::default() };
        assert!(hold >= price(&worst, &NO_TOOLS, &p, CnyPerUsd::from_micros(1_000_000)).charge_micros);
    }
}
