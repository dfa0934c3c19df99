//! Starts a throw-away CloudRouter gateway for external tests and benchmarks.
//!
//! It creates a fresh database on the given Postgres server, applies the migrations, starts the
//! gateway on 127.0.0.1 (and, unless upstream URLs are given, an in-process fake Claude), creates a
//! customer with a balance and keys, and prints one JSON line on stdout:
//! `{"base_url": "...", "api_key": "...", "api_key_sse": "...", "database_url": "..."}`.
//! It runs until stdin closes (or Ctrl-C), then shuts the gateway down (flushing usage), prints a
//! summary on stderr and drops the database.
//!
//! Usage: gateway-testbed [--database-url URL] [--port N] [--upstream-json URL --upstream-sse URL]
//!                        [--balance CNY] [--log LEVEL]

use cloudrouter_core::crypto::Crypto;
use cloudrouter_core::demo::{FakeBehavior, FakeUpstream};
use cloudrouter_core::gateway::{Gateway, GatewayConfig};
use cloudrouter_core::keys::{self, NewKey};
use cloudrouter_core::billing::ledger::{self, LedgerKind, Memo};
use cloudrouter_core::upstreams::{self, NewUpstream};
use cloudrouter_core::db;
use cloudrouter_core::money::{CnyPerUsd, MicroCny};

#[path = "shared/cli.rs"]
mod cli;
use cli::{arg, stdin_closed};

// glibc malloc showed up as ~15 % of the gateway's CPU under load (arena locks, consolidation).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let level = arg(&args, "--log").unwrap_or_else(|| "warn".into());
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(level)).with_writer(std::io::stderr).init();
    // metrics recorded as the server records them (the benchmark counts their cost)
    let _metrics = cloudrouter_core::telemetry::install();
    let server_url = arg(&args, "--database-url")
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let port: u16 = arg(&args, "--port").and_then(|p| p.parse().ok()).unwrap_or(0);
    let balance = MicroCny::parse(&arg(&args, "--balance").unwrap_or_else(|| "1000".into()))?;

    let admin = db::connect(&server_url, db::DEFAULT_POOL_SIZE).await?;
    let dbname = format!("cr_testbed_{}", cloudrouter_core::util::random_base62(10).to_lowercase());
    sqlx::query(&format!("CREATE DATABASE {dbname}")).execute(&admin).await?;
    let (base, _) = server_url.rsplit_once('/').unwrap_or((&server_url, ""));
    let database_url = format!("{base}/{dbname}");
    let pool = db::connect(&database_url, db::DEFAULT_POOL_SIZE).await?;
    db::migrate(&pool).await?;

    let secret = std::env::var("CLOUDROUTER_SECRET").unwrap_or_else(|_| "testbed-secret".into());
    let crypto = Crypto::from_secret(&secret);
    let (json_url, sse_url, _fake) = match (arg(&args, "--upstream-json"), arg(&args, "--upstream-sse")) {
        (Some(j), Some(s)) => (j, s, None),
        _ => {
            let f = FakeUpstream::start(FakeBehavior::default()).await?;
            (f.base_url.clone(), f.base_url.clone(), Some(f))
        }
    };
    let same = json_url == sse_url;
    let mk = |name: &str, url: &str, channels: Vec<String>| NewUpstream {
        name: name.into(),
        base_url: url.into(),
        api_key: "sk-testbed-upstream".into(),
        channels,
        priority: 0,
        weight: 1,
        concurrency_cap: None,
        enabled: true,
    };
    if same {
        upstreams::create(&pool, &crypto, mk("fake", &json_url, vec!["value".into(), "smart".into(), "stable".into()])).await?;
    } else {
        upstreams::create(&pool, &crypto, mk("fake-json", &json_url, vec!["value".into()])).await?;
        upstreams::create(&pool, &crypto, mk("fake-sse", &sse_url, vec!["smart".into()])).await?;
    }
    // generous capacity for load tests
    for c in ["value", "smart", "stable"] {
        let rate: CnyPerUsd = sqlx::query_scalar("SELECT rate_micros_per_usd FROM channels WHERE code = $1").bind(c).fetch_one(&pool).await?;
        cloudrouter_core::catalogue::update_channel(&pool, c, rate, 100_000, 0).await?;
    }
    let user = cloudrouter_core::accounts::create_user(&pool, "testbed@example.com", "correct horse battery staple 9").await?;
    ledger::adjust(&pool, user.id, balance, LedgerKind::Credit, &Memo::Staff { text: Some("testbed".into()) }, None).await?;
    let (_, key_json) = keys::create(&pool, user.id, NewKey { name: "json".into(), channel: "value".into(), ..Default::default() }).await?;
    let (_, key_sse) = keys::create(&pool, user.id, NewKey { name: "sse".into(), channel: "smart".into(), ..Default::default() }).await?;
    let (_, key_haiku) = keys::create(
        &pool,
        user.id,
        NewKey { name: "haiku only".into(), channel: "smart".into(), allowed_models: vec!["claude-haiku-5-5".into()], ..Default::default() },
    )
    .await?;

    let gw = Gateway::start(pool.clone(), crypto, GatewayConfig::from_env().map_err(anyhow::Error::msg)?).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let app = gw.router();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(cloudrouter_core::gateway::nodelay(listener), app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    println!(
        "{}",
        serde_json::json!({
            "base_url": format!("http://{addr}"),
            "api_key": key_json,
            "api_key_sse": key_sse,
            "api_key_haiku_only": key_haiku,
            "user_id": user.id,
            "database_url": database_url,
        })
    );

    tokio::select! {
        _ = stdin_closed() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    gw.shutdown().await;
    let (n, charged): (i64, i64) = sqlx::query_as("SELECT count(*), COALESCE(sum(charge_micros),0)::BIGINT FROM usage_records")
        .fetch_one(&pool)
        .await?;
    let ok = ledger::verify(&pool, user.id).await?;
    eprintln!(
        "testbed: {n} usage records, charged {}, balance {}, ledger consistent: {ok}",
        MicroCny::from_micros(charged).exact(),
        ledger::balance(&pool, user.id).await?.exact()
    );
    pool.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE {dbname} WITH (FORCE)")).execute(&admin).await;
    Ok(())
}
