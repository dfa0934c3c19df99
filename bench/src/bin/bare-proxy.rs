//! The benchmark's floor for the gateway's stack: an axum server that forwards `POST /v1/messages`
//! to one upstream with hyper-util's pooled client — the same server, runtime, client and
//! allocator as the gateway, and none of its work (no key, limits, money, parsing or metering).
//! `bench/run.sh` puts it beside the bare nginx proxy, so that the gateway's cost splits into
//! what the HTTP stack costs and what the gateway's own work adds.
//!
//! Usage: bare-proxy --upstream-json URL --upstream-sse URL; prints `{"base_url": "..."}` and runs
//! until stdin closes. `/json/...` goes to the first upstream, `/sse/...` to the second; the
//! answer streams through as it arrives, as nginx's `proxy_buffering off` does.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;

#[path = "shared/cli.rs"]
mod cli;
use cli::{arg, stdin_closed};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Upstreams {
    client: Client<HttpConnector, Full<bytes::Bytes>>,
    json: String,
    sse: String,
}

async fn forward(State(up): State<Arc<Upstreams>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let (base, rest) = match (path.strip_prefix("/json/"), path.strip_prefix("/sse/")) {
        (Some(rest), _) => (&up.json, rest),
        (_, Some(rest)) => (&up.sse, rest),
        _ => return Response::builder().status(404).body(Body::empty()).unwrap(),
    };
    let Ok(body) = axum::body::to_bytes(body, 32 << 20).await else {
        return Response::builder().status(400).body(Body::empty()).unwrap();
    };
    let mut out = hyper::Request::builder().method(parts.method).uri(format!("{base}/{rest}"));
    for name in [http::header::CONTENT_TYPE, http::header::HeaderName::from_static("anthropic-version")] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    match up.client.request(out.body(Full::new(body)).unwrap()).await {
        Ok(resp) => resp.map(Body::new),
        Err(_) => Response::builder().status(502).body(Body::empty()).unwrap(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let up = Arc::new(Upstreams {
        client: Client::builder(TokioExecutor::new()).pool_max_idle_per_host(4096).build(connector),
        json: arg(&args, "--upstream-json").ok_or_else(|| anyhow::anyhow!("--upstream-json URL"))?,
        sse: arg(&args, "--upstream-sse").ok_or_else(|| anyhow::anyhow!("--upstream-sse URL"))?,
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    println!("{}", serde_json::json!({ "base_url": format!("http://{}", listener.local_addr()?) }));
    let app = axum::Router::new().fallback(forward).with_state(up);
    let server = axum::serve(cloudrouter_core::gateway::nodelay(listener), app);
    tokio::select! {
        _ = server => {}
        _ = stdin_closed() => {}
    }
    Ok(())
}
