//! Money and trust (issue #11) through the assembled server, attacker's view: the server secret,
//! Secure cookies, key secrets kept nowhere, and the built-in demo upstream.

use cloudrouter_core::{accounts, admin_api, db};
use leptos::prelude::LeptosOptions;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use server::config::Config;
use sqlx::PgPool;

mod common;

use common::{client as browser, spawn_app_with, TestApp, PASSWORD};

/// A secret good enough for a public deployment (the harness's own, fixed).
const STRONG_SECRET: &str = "trust-tests-0f9c2b7e5a1d4c8e9b3a6f2d7c1e8b4a";

/// The server's settings for a test on `addr`, as `server` would read them, with `public_url`
/// and `secret` as given (and an SMTP server named, which a public URL requires; nothing is mailed).
fn config(addr: std::net::SocketAddr, public_url: &str, secret: &str) -> Config {
    Config { public_url: public_url.into(), secret: secret.into(), smtp_url: Some("smtp://127.0.0.1:9".into()), ..Config::from_env(addr) }
}

async fn build(pool: &PgPool, config: &Config) -> Result<server::Built, Box<dyn std::error::Error>> {
    let leptos = LeptosOptions::builder().output_name("cloudrouter").site_addr(config.addr).build();
    server::build(pool.clone(), config, leptos).await
}

/// Serves the app on a fresh port with a strong secret (and `public_url`, if given).
async fn start(pool: &PgPool, public_url: Option<&str>) -> TestApp {
    let public_url = public_url.map(str::to_owned);
    spawn_app_with(pool.clone(), |c| {
        c.secret = STRONG_SECRET.into();
        if let Some(url) = public_url {
            c.public_url = url;
        }
    })
    .await
}

fn addr() -> std::net::SocketAddr {
    "127.0.0.1:3000".parse().unwrap()
}

#[sqlx::test(migrations = false)]
async fn server_without_a_secret_refuses_to_start(pool: PgPool) {
    db::migrate(&pool).await.unwrap();
    let err = build(&pool, &config(addr(), "http://127.0.0.1:3000", "")).await.err().expect("refused");
    assert!(err.to_string().contains("CLOUDROUTER_SECRET"), "{err}");
}

#[sqlx::test(migrations = false)]
async fn known_or_short_secret_is_refused_for_a_public_url(pool: PgPool) {
    db::migrate(&pool).await.unwrap();
    for weak in ["cloudrouter-development-secret-change-me", "changeme", "short-but-random-9f3k", "secretsecretsecretsecretsecretsecret"] {
        for public in ["https://console.example.com", "http://console.example.com"] {
            let err = build(&pool, &config(addr(), public, weak)).await.err();
            assert!(err.as_ref().is_some_and(|e| e.to_string().contains("CLOUDROUTER_SECRET")), "{weak} accepted for {public}: {err:?}");
        }
    }
    assert!(build(&pool, &config(addr(), "https://console.example.com", STRONG_SECRET)).await.is_ok());
}

#[test]
fn cookies_are_secure_unless_plain_http_on_loopback() {
    let secure = |url: &str| config(addr(), url, STRONG_SECRET).secure_cookies();
    for local in ["http://127.0.0.1:3000", "http://127.8.0.1", "http://localhost:3000", "http://[::1]:3000", "HTTP://LocalHost/"] {
        assert!(!secure(local), "{local}");
    }
    for public in ["https://console.example.com", "https://127.0.0.1", "http://console.example.com", "http://192.168.1.20:3000", "http://localhost.example.com", "http://127.0.0.1.example.com", "http://0.0.0.0:3000", "not a url"] {
        assert!(secure(public), "{public}");
    }
}

#[test]
fn a_setting_that_does_not_parse_stops_the_server_instead_of_defaulting() {
    let with_slots = |v: &'static str| Config::from_vars(addr(), move |k| (k == "CLOUDROUTER_HASH_SLOTS").then(|| v.to_string()));
    for bad in ["many", "0", "-2", "1.5"] {
        let err = with_slots(bad).check_parsed().expect_err(bad);
        assert!(err.contains("CLOUDROUTER_HASH_SLOTS"), "{err}");
    }
    let config = with_slots(" 3 ");
    assert_eq!((config.hash_slots, config.check_parsed()), (3, Ok(())));
}

#[sqlx::test(migrations = false)]
async fn public_url_without_smtp_refuses_to_start(pool: PgPool) {
    db::migrate(&pool).await.unwrap();
    let public = Config { smtp_url: None, ..config(addr(), "https://console.example.com", STRONG_SECRET) };
    let err = build(&pool, &public).await.err().expect("refused: nobody could confirm a sign-up");
    assert!(err.to_string().contains("CLOUDROUTER_SMTP_URL"), "{err}");
    let local = Config { smtp_url: None, ..config(addr(), "http://127.0.0.1:3000", STRONG_SECRET) };
    assert!(build(&pool, &local).await.is_ok(), "a local console writes its mail to files");
}

#[sqlx::test(migrations = false)]
async fn session_cookie_is_secure_on_a_plain_http_public_url(pool: PgPool) {
    let app = start(&pool, Some("http://console.example.com")).await;
    let c = browser();
    app.request_signup(&c, "sam@example.com").await;
    let token = app.mail.nth_to("sam@example.com", 1).await.token("/signup/confirm").unwrap();
    let res = app.post(&c, "confirm_signup", &[("token", &token)]).await;
    assert!(res.status().is_success(), "{}", res.status());
    let cookie = res.headers().get("set-cookie").expect("a session cookie").to_str().unwrap().to_string();
    assert!(cookie.contains("Secure"), "{cookie}");
}

/// Every row of every table, as text (bytea as hex), with where it came from.
async fn every_row(pool: &PgPool) -> Vec<(String, String)> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
         WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = vec![];
    for (schema, table) in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT x::text FROM \"{schema}\".\"{table}\" x")).fetch_all(pool).await.unwrap();
        out.extend(rows.into_iter().map(|r| (format!("{schema}.{table}"), r)));
    }
    out
}

fn shown_secret(html: &str) -> Option<String> {
    let at = html.find("data-testid=\"new-key-secret\"")?;
    let start = at + html[at..].find('>')? + 1;
    let end = start + html[start..].find('<')?;
    Some(html[start..end].trim().to_string())
}

#[sqlx::test(migrations = false)]
async fn new_key_secret_is_shown_in_the_post_response_and_stored_nowhere(pool: PgPool) {
    let app = start(&pool, None).await;
    let base = app.base.clone();
    let c = browser();
    assert!(app.signup(&c, "nojs@example.com").await.0.is_success());
    // The browser's own form post, JavaScript off.
    let res = c
        .post(format!("{base}/api/keys/create"))
        .header("accept", "text/html,application/xhtml+xml")
        .header("referer", format!("{base}/console/keys"))
        .form(&[("name", "plain form"), ("channel", "value"), ("spend_limit", ""), ("expires_in_days", ""), ("models", ""), ("rpm_limit", ""), ("concurrency_limit", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "the answer to the post shows the key: {:?}", res.headers().get("location"));
    assert_eq!(res.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    let html = res.text().await.unwrap();
    let secret = shown_secret(&html).expect("the secret in the page");
    assert!(secret.starts_with("cr-") && secret.len() == 43, "{secret}");
    assert!(html.contains("plain form"), "the keys page with the new key listed");

    let hex_tail: String = secret.as_bytes()[3..].iter().map(|b| format!("{b:02x}")).collect();
    let rows = every_row(&pool).await;
    assert!(rows.iter().any(|(t, _)| t == "tower_sessions.session"), "the session table was searched");
    for (table, row) in rows {
        assert!(!row.contains(&secret[3..]) && !row.contains(&hex_tail), "the key secret is stored in {table}");
    }
    // Shown once: the keys page does not show it again.
    let again = c.get(format!("{base}/console/keys")).send().await.unwrap().text().await.unwrap();
    assert!(again.contains("plain form") && shown_secret(&again).is_none());
}

#[sqlx::test(migrations = false)]
async fn demo_upstream_is_gone_once_the_staff_api_adds_a_real_upstream(pool: PgPool) {
    let base = start(&pool, None).await.base;
    accounts::ensure_staff(&pool, "ops@example.com", PASSWORD).await.unwrap();
    let token = admin_api::issue_token(&pool, "ops@example.com", None).await.unwrap();
    let http = Client::builder().no_proxy().build().unwrap();
    let demo = |body: Value| http.post(format!("{base}/_demo/v1/messages")).header("x-api-key", "anything").json(&body).send();
    let hello = json!({"model": "claude-haiku-4-5-20251001", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(demo(hello.clone()).await.unwrap().status(), 200, "demo mode: the simulated Claude answers");
    let res = http
        .post(format!("{base}/api/admin/v1/upstreams"))
        .bearer_auth(&token)
        .json(&json!({"name": "anthropic", "base_url": "https://api.anthropic.com", "api_key": "sk-ant-real-credential", "channels": ["value", "smart", "stable"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let demo_enabled: Vec<bool> = sqlx::query_scalar("SELECT enabled FROM upstreams WHERE is_demo").fetch_all(&pool).await.unwrap();
    assert_eq!(demo_enabled, [false], "the staff API ends demo mode as the console does");
    assert_eq!(demo(hello).await.unwrap().status(), StatusCode::NOT_FOUND, "no simulated Claude once a real upstream exists");
}

#[sqlx::test(migrations = false)]
async fn demo_upstream_refuses_large_bodies(pool: PgPool) {
    let base = start(&pool, None).await.base;
    let http = Client::builder().no_proxy().build().unwrap();
    let mut big = json!({"model": "claude-haiku-4-5-20251001", "max_tokens": 8, "messages": [{"role": "user", "content": ""}]});
    big["messages"][0]["content"] = Value::String("a".repeat(2 << 20));
    let res = http.post(format!("{base}/_demo/v1/messages")).header("x-api-key", "anything").json(&big).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "the demo is not a sink for large uploads");
}

/// `server secret rotate` as an operator runs it, against the test's database.
fn rotate(pool: &PgPool, old: &str, new_file: &std::path::Path) -> std::process::Output {
    let admin = std::env::var("DATABASE_URL").unwrap();
    let db = pool.connect_options().get_database().unwrap().to_string();
    std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["secret", "rotate", "--new-file"])
        .arg(new_file)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("DATABASE_URL", format!("{}/{db}", &admin[..admin.rfind('/').unwrap()]))
        .env("CLOUDROUTER_SECRET", old)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn secret_rotation_reencrypts_every_credential_or_none(pool: PgPool) {
    use cloudrouter_core::crypto::Crypto;
    use cloudrouter_core::upstreams::{self, NewUpstream};
    db::migrate(&pool).await.unwrap();
    let old = Crypto::from_secret(STRONG_SECRET);
    for name in ["a", "b"] {
        let u = NewUpstream { name: name.into(), base_url: "https://api.anthropic.com".into(), api_key: format!("sk-ant-{name}-credential"), channels: vec!["value".into()], priority: 0, weight: 1, concurrency_cap: None, enabled: true };
        upstreams::create(&pool, &old, u).await.unwrap();
    }
    // An account with two-factor sign-in being set up: its secret is under the server secret too.
    let user = accounts::create_user(&pool, "rotate@example.com", PASSWORD).await.unwrap();
    cloudrouter_core::totp::begin(&pool, &old, user.id).await.unwrap();
    let totp_secret = cloudrouter_core::totp::status(&pool, &old, user.id).await.unwrap().pending.unwrap();
    let stored = || async { sqlx::query_as::<_, (String, Vec<u8>)>("SELECT name, credential_enc FROM upstreams ORDER BY name").fetch_all(&pool).await.unwrap() };
    let before = stored().await;
    let dir = std::env::temp_dir().join(format!("cr-rotate-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (weak, strong) = (dir.join("weak"), dir.join("strong"));
    std::fs::write(&weak, "changeme\n").unwrap();
    const NEW: &str = "rotated-7d1e4b9a2c6f8e3d5b0a9c7e1f4d2b8a";
    std::fs::write(&strong, format!("{NEW}\n")).unwrap();

    // A weak new secret, or a wrong current one: refused, nothing changed.
    let out = rotate(&pool, STRONG_SECRET, &weak);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("refused"), "{out:?}");
    let out = rotate(&pool, "not-the-current-secret-but-long-enough-0123456789", &strong);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot be decrypted"), "{out:?}");
    assert_eq!(stored().await, before);

    // One credential under another secret: the whole rotation is refused (all or nothing).
    let stray = NewUpstream { name: "c".into(), base_url: "https://api.anthropic.com".into(), api_key: "sk-ant-c-credential".into(), channels: vec!["value".into()], priority: 0, weight: 1, concurrency_cap: None, enabled: true };
    upstreams::create(&pool, &Crypto::from_secret("some-other-secret"), stray).await.unwrap();
    let out = rotate(&pool, STRONG_SECRET, &strong);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("\"c\""), "{out:?}");
    assert_eq!(stored().await[..2], before[..]);
    sqlx::query("DELETE FROM upstreams WHERE name = 'c'").execute(&pool).await.unwrap();

    let out = rotate(&pool, STRONG_SECRET, &strong);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 upstream credential(s), 1 two-factor secret(s) and 0 alert webhook secret(s) re-encrypted"), "{out:?}");
    let new = Crypto::from_secret(NEW);
    for (name, enc) in stored().await {
        assert_eq!(new.decrypt_str(&enc).unwrap(), format!("sk-ant-{name}-credential"));
        assert!(old.decrypt(&enc).is_err(), "no longer readable under the old secret");
    }
    assert_eq!(cloudrouter_core::totp::status(&pool, &new, user.id).await.unwrap().pending, Some(totp_secret), "two-factor secrets follow the server secret");
    std::fs::remove_dir_all(&dir).unwrap();
}
