//! Many long streams (issue #16): a fake Claude that streams one event every `--interval-ms` for
//! `--seconds`, each stamped with the time it was sent, and a load generator that holds
//! `--streams` of them open at once and measures what a relay adds per event.
//!
//! `stream-load upstream [--port N] [--interval-ms 50] [--seconds 20]` prints `{"base_url": …}`
//! and serves `POST /v1/messages` as an SSE stream (message_start, content_block_start, a
//! content_block_delta per tick whose text is `seq:send-time-µs;`, then the closing events with
//! usage) until stdin closes.
//!
//! `stream-load client --url URL --key KEY --streams N [--ramp-seconds 5] [--pid PID]` opens N
//! streams (spread over the ramp), one connection each, reads every event and prints one JSON
//! line: streams completed, events, event delay p50/p99/p99.9 (µs, from the upstream's send time
//! to the client's read, same clock), time to first event p50/p99, events out of order or
//! missing (what a client sees must be exactly what was sent), and, for `--pid` (the relay's
//! process), its RSS before and with every stream open, and its CPU time over the run.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "shared/cli.rs"]
mod cli;
#[path = "shared/histogram.rs"]
mod histogram;
use cli::{arg, stdin_closed};
use histogram::Histogram;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn num<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    arg(args, name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("upstream") => upstream(&args).await,
        Some("client") => client(&args).await,
        _ => anyhow::bail!("usage: stream-load upstream|client …"),
    }
}

// ---- the upstream -------------------------------------------------------------------------

async fn upstream(args: &[String]) -> anyhow::Result<()> {
    let port: u16 = num(args, "--port", 0);
    let interval = Duration::from_millis(num(args, "--interval-ms", 50));
    let ticks: u64 = num::<u64>(args, "--seconds", 20) * 1000 / interval.as_millis().max(1) as u64;
    let app = axum::Router::new().route("/v1/messages", axum::routing::post(move || async move { stream_answer(interval, ticks) }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("{}", serde_json::json!({ "base_url": format!("http://{}", listener.local_addr()?), "events": ticks }));
    tokio::select! {
        r = axum::serve(listener, app) => r?,
        _ = stdin_closed() => {}
    }
    Ok(())
}

const HEAD: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_stream_load\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-6\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";

fn stream_answer(interval: Duration, ticks: u64) -> Response {
    // tick 0 is the head; ticks 1..=n the stamped deltas; then the tail
    let events = futures::stream::unfold(0u64, move |i| async move {
        let chunk = if i == 0 {
            HEAD.to_string()
        } else if i <= ticks {
            tokio::time::sleep(interval).await;
            format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{i}:{};\"}}}}\n\n",
                now_us()
            )
        } else if i == ticks + 1 {
            format!(
                "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n",
                ticks * 4
            )
        } else {
            return None;
        };
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), i + 1))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(events))
        .unwrap_or_default()
}

// ---- the load generator -------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    opened: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    /// an event missing, repeated or out of order
    disordered: AtomicU64,
}

/// The process's resident memory (KiB) and CPU time (user + system, in clock ticks).
fn process(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let cpu = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((rss, cpu))
}

async fn client(args: &[String]) -> anyhow::Result<()> {
    let url: http::Uri = arg(args, "--url").ok_or_else(|| anyhow::anyhow!("--url"))?.parse()?;
    let key = arg(args, "--key").unwrap_or_default();
    let streams: u64 = num(args, "--streams", 1000);
    let ramp = Duration::from_secs_f64(num(args, "--ramp-seconds", 5.0));
    let expected: u64 = num(args, "--events", 400);
    let pid: Option<u32> = arg(args, "--pid").and_then(|p| p.parse().ok());
    let addr = format!("{}:{}", url.host().unwrap_or("127.0.0.1"), url.port_u16().unwrap_or(80));
    let body = Bytes::from(
        serde_json::json!({"model": "claude-sonnet-4-6", "max_tokens": 1024, "stream": true,
            "messages": [{"role": "user", "content": "Count slowly."}]})
        .to_string(),
    );

    let delays = Arc::new(Histogram::new());
    let ttfe = Arc::new(Histogram::new());
    let tally = Arc::new(Tally::default());
    let before = pid.and_then(process);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(streams as usize);
    for i in 0..streams {
        let at = started + ramp.mul_f64(i as f64 / streams as f64);
        let (addr, key, body, url) = (addr.clone(), key.clone(), body.clone(), url.clone());
        let (delays, ttfe, tally) = (delays.clone(), ttfe.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            match one_stream(&addr, &url, &key, body, expected, &delays, &ttfe, &tally).await {
                Ok(()) => tally.completed.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    if tally.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("stream failed: {e}");
                    }
                    0
                }
            };
        }));
    }
    // with every stream open (after the ramp, before the first ends): the relay's memory
    let mut plateau = None;
    let sampler = {
        let tally = tally.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if tally.opened.load(Ordering::Relaxed) >= streams || started.elapsed() > ramp + Duration::from_secs(5) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    return pid.and_then(process);
                }
            }
        }
    };
    let all = futures::future::join_all(tasks);
    tokio::pin!(all);
    tokio::select! {
        p = sampler => { plateau = p; (&mut all).await; }
        _ = &mut all => {}
    }
    let after = pid.and_then(process);
    let elapsed = started.elapsed();
    let ticks = 100.0; // USER_HZ on Linux
    let events = delays.count();
    let out = serde_json::json!({
        "streams": streams,
        "completed": tally.completed.load(Ordering::Relaxed),
        "failed": tally.failed.load(Ordering::Relaxed),
        "disordered": tally.disordered.load(Ordering::Relaxed),
        "events": events,
        "seconds": elapsed.as_secs_f64(),
        "delay_us": {"p50": delays.percentile(50.0), "p99": delays.percentile(99.0), "p999": delays.percentile(99.9)},
        "first_event_us": {"p50": ttfe.percentile(50.0), "p99": ttfe.percentile(99.0)},
        "relay": pid.map(|_| serde_json::json!({
            "rss_before_kib": before.map(|b| b.0),
            "rss_open_kib": plateau.map(|p| p.0),
            "rss_per_stream_kib": match (before, plateau) { (Some(b), Some(p)) => Some((p.0 as f64 - b.0 as f64) / streams as f64), _ => None },
            "cpu_seconds": match (before, after) { (Some(b), Some(a)) => Some((a.1 - b.1) as f64 / ticks), _ => None },
            "cpu_us_per_event": match (before, after) { (Some(b), Some(a)) if events > 0 => Some((a.1 - b.1) as f64 / ticks * 1e6 / events as f64), _ => None },
        })),
    });
    println!("{out}");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn one_stream(addr: &str, url: &http::Uri, key: &str, body: Bytes, expected: u64, delays: &Histogram, ttfe: &Histogram, tally: &Tally) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::post(url.path())
        .header("host", addr)
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let sent = Instant::now();
    let res = sender.send_request(req).await?;
    anyhow::ensure!(res.status() == 200, "status {}", res.status());
    tally.opened.fetch_add(1, Ordering::Relaxed);
    let mut body = res.into_body();
    let mut pending = Vec::<u8>::new();
    let (mut next, mut first) = (1u64, true);
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else { continue };
        let read_at = now_us();
        if first {
            ttfe.record(sent.elapsed().as_micros() as u64);
            first = false;
        }
        pending.extend_from_slice(data);
        // every complete stamp "seq:time;" in what has arrived
        let mut start = 0;
        const MARK: &[u8] = b"\"text_delta\",\"text\":\"";
        while let Some(pos) = find(&pending[start..], MARK) {
            let from = start + pos + MARK.len();
            let Some(end) = pending[from..].iter().position(|&b| b == b';') else { break };
            let stamp = std::str::from_utf8(&pending[from..from + end]).unwrap_or("");
            if let Some((seq, t)) = stamp.split_once(':') {
                let (seq, t): (u64, u64) = (seq.parse().unwrap_or(0), t.parse().unwrap_or(0));
                if seq != next {
                    tally.disordered.fetch_add(1, Ordering::Relaxed);
                }
                next = seq + 1;
                delays.record(read_at.saturating_sub(t));
            }
            start = from + end + 1;
        }
        pending.drain(..start);
    }
    if next != expected + 1 {
        tally.disordered.fetch_add(1, Ordering::Relaxed);
        anyhow::bail!("{} of {expected} events", next - 1);
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
