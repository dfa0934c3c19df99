//! Open-loop latency (issue #16): requests at a fixed offered rate, whatever the server does, with
//! each latency measured from the time the request was scheduled to be sent, so that a server
//! falling behind shows as latency instead of a lower rate (a closed loop hides that queueing).
//! The client's own timer lateness is left out: a request whose connection was free when it was
//! due is timed from the moment it is sent.
//!
//! `open-loop --url URL [--key KEY] --rate R [--seconds 10] [--connections 32] [--stream]`
//! keeps C keep-alive connections; connection i sends the requests scheduled at
//! start + (k·C + i) / R, k = 0, 1, …, each after the previous answer on that connection has been
//! read in full. Prints one JSON line: requests scheduled and answered, non-200 answers, the rate
//! achieved, and latency p50 / p99 / p99.9 in µs.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "shared/cli.rs"]
#[allow(dead_code)] // its stdin_closed is for the programs a script stops; this one stops by itself
mod cli;
#[path = "shared/histogram.rs"]
mod histogram;
use cli::arg;
use histogram::Histogram;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let num = |name: &str, default: f64| arg(&args, name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let url: http::Uri = arg(&args, "--url").ok_or_else(|| anyhow::anyhow!("--url"))?.parse()?;
    let key = arg(&args, "--key").unwrap_or_default();
    let rate = num("--rate", 1000.0);
    let seconds = num("--seconds", 10.0);
    let connections = num("--connections", 32.0) as u64;
    let stream = args.iter().any(|a| a == "--stream");
    let total = (rate * seconds) as u64;
    let addr = format!("{}:{}", url.host().unwrap_or("127.0.0.1"), url.port_u16().unwrap_or(80));
    let body = Bytes::from(format!(
        "{{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":256,\"stream\":{stream},\"messages\":[{{\"role\":\"user\",\"content\":\"Hello, Claude\"}}]}}"
    ));

    let latency = Arc::new(Histogram::new());
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = vec![];
    for i in 0..connections {
        let (addr, key, body, path) = (addr.clone(), key.clone(), body.clone(), url.path().to_string());
        let (latency, answered, failed) = (latency.clone(), answered.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            let mut k = 0;
            loop {
                let n = k * connections + i;
                if n >= total {
                    break;
                }
                k += 1;
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                // Latency counts from `due` when this connection was still busy with the previous
                // answer then (the server kept the request waiting); otherwise from when the timer
                // woke this task (tokio's timer is late by up to a millisecond, not the server).
                let behind = Instant::now() > due;
                tokio::time::sleep_until(due.into()).await;
                let from = if behind { due } else { Instant::now() };
                match send(&mut conn, &addr, &path, &key, body.clone()).await {
                    Ok(true) => answered.fetch_add(1, Ordering::Relaxed),
                    Ok(false) | Err(_) => {
                        conn = None;
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                latency.record(from.elapsed().as_micros() as u64);
            }
        }));
    }
    futures::future::join_all(tasks).await;
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "rate": rate, "scheduled": total, "answered": answered.load(Ordering::Relaxed),
            "failed": failed.load(Ordering::Relaxed), "achieved_rate": answered.load(Ordering::Relaxed) as f64 / elapsed,
            "latency_us": {"p50": latency.percentile(50.0), "p99": latency.percentile(99.0), "p999": latency.percentile(99.9)},
        })
    );
    Ok(())
}

type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One request on the connection (opened when there is none); true for a 200 read in full.
async fn send(conn: &mut Option<Conn>, addr: &str, path: &str, key: &str, body: Bytes) -> anyhow::Result<bool> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        *conn = Some(sender);
    }
    let Some(sender) = conn.as_mut() else { return Ok(false) };
    sender.ready().await?;
    let req = http::Request::post(path)
        .header("host", addr)
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let res = sender.send_request(req).await?;
    let ok = res.status() == 200;
    res.into_body().collect().await?;
    Ok(ok)
}
