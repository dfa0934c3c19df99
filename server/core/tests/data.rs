//! Keys, ledger, upstreams, catalogue and the admin API against a fresh database.
mod common;

use common::*;
use cloudrouter_core::crypto::Crypto;
use cloudrouter_core::keys::{self, NewKey};
use cloudrouter_core::billing::ledger::{self, LedgerError, LedgerKind};
use cloudrouter_core::upstreams::{self, NewUpstream};
use cloudrouter_core::{admin_api, catalogue, demo};
use sqlx::PgPool;

#[sqlx::test(migrations = "../../migrations")]
async fn catalogue_is_seeded(pool: PgPool) {
    let models = catalogue::list_models(&pool).await.unwrap();
    let get = |id: &str| models.iter().find(|m| m.id == id).unwrap().clone();
    let s = get("claude-sonnet-4-5-20250929");
    assert_eq!((s.input_price.micros(), s.output_price.micros(), s.cache_write_5m_price.micros(), s.cache_write_1h_price.micros(), s.cache_read_price.micros()), (3_000_000, 15_000_000, 3_750_000, 6_000_000, 300_000));
    let h = get("claude-haiku-5-5");
    assert_eq!((h.input_price.micros(), h.output_price.micros(), h.cache_read_price.micros()), (100_000, 500_000, 10_000));
    assert_eq!(get("claude-opus-5-5").input_price, usd(4_000_000));
    assert_eq!(get("claude-opus-4-1").output_price, usd(75_000_000));
    assert!(models.iter().all(|m| m.id.starts_with("claude-")));
    for m in &models {
        for f in &m.fallbacks {
            assert!(models.iter().any(|x| &x.id == f), "fallback {f} of {} is in the catalogue", m.id);
        }
    }
    // aliases: Anthropic's short names for dated models; never a model id, each names one model
    assert_eq!(get("claude-sonnet-4-5-20250929").aliases, vec!["claude-sonnet-4-5".to_string()]);
    assert_eq!(get("claude-opus-4-5-20251101").aliases, vec!["claude-opus-4-5".to_string()]);
    assert_eq!(get("claude-haiku-4-5-20251001").aliases, vec!["claude-haiku-4-5".to_string()]);
    assert!(get("claude-3-7-sonnet").aliases.contains(&"claude-3-7-sonnet-latest".to_string()));
    let all: Vec<&String> = models.iter().flat_map(|m| &m.aliases).collect();
    for a in &all {
        assert!(!models.iter().any(|m| &&m.id == a), "alias {a} is not a model id");
        assert_eq!(all.iter().filter(|x| x == &a).count(), 1, "alias {a} names one model");
    }
    // upsert keeps aliases; a clashing alias is refused
    let mut s2 = get("claude-sonnet-4-5-20250929");
    s2.aliases.push("claude-sonnet-4-5-latest".into());
    catalogue::upsert_model(&pool, &s2).await.unwrap();
    assert_eq!(catalogue::get_model(&pool, &s2.id).await.unwrap().unwrap().aliases, s2.aliases);
    let mut o = get("claude-opus-4-5-20251101");
    o.aliases.push("claude-sonnet-4-5".into());
    assert!(catalogue::upsert_model(&pool, &o).await.is_err(), "alias of another model");
    o.aliases = vec!["claude-opus-4-6".into()];
    assert!(catalogue::upsert_model(&pool, &o).await.is_err(), "alias equal to a model id");

    let ch = catalogue::list_channels(&pool).await.unwrap();
    let rates: Vec<(&str, i64)> = ch.iter().map(|c| (c.code.as_str(), c.rate_micros_per_usd.micros())).collect();
    assert_eq!(rates, vec![("value", 600_000), ("smart", 1_000_000), ("stable", 5_000_000)]);
}

#[sqlx::test(migrations = "../../migrations")]
async fn keys_lifecycle(pool: PgPool) {
    let u = customer(&pool, "0").await;
    let other = customer(&pool, "0").await;
    let (k, secret) = keys::create(
        &pool,
        u,
        NewKey { name: "ci".into(), channel: "value".into(), spend_limit_micros: Some(cny(5_000_000)), allowed_models: vec!["claude-haiku-5-5".into()], ..Default::default() },
    )
    .await
    .unwrap();
    assert!(secret.starts_with("cr-") && secret.len() == 43);
    assert!(secret[3..].chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(k.prefix, &secret[..9]);
    // only the hash is stored
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_hash FROM api_keys WHERE id = $1").bind(k.id).fetch_one(&pool).await.unwrap();
    assert_eq!(stored, keys::hash_secret(&secret).to_vec());
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, '') FROM api_keys t").fetch_one(&pool).await.unwrap();
    assert!(!dump.contains(&secret[3..]));
    assert_eq!(keys::list(&pool, u).await.unwrap().len(), 1);
    assert!(keys::list(&pool, other).await.unwrap().is_empty());
    assert!(keys::get(&pool, other, k.id).await.unwrap().is_none());
    assert!(!keys::revoke(&pool, other, k.id).await.unwrap());
    assert!(keys::revoke(&pool, u, k.id).await.unwrap());
    assert!(!keys::revoke(&pool, u, k.id).await.unwrap(), "already revoked");
    assert!(keys::list(&pool, u).await.unwrap()[0].revoked_at.is_some());
    assert!(matches!(keys::create(&pool, u, NewKey { name: "x".into(), channel: "gold".into(), ..Default::default() }).await, Err(keys::KeyError::UnknownChannel)));
    assert!(matches!(
        keys::create(&pool, u, NewKey { name: "x".into(), channel: "smart".into(), allowed_models: vec!["gpt-4".into()], ..Default::default() }).await,
        Err(keys::KeyError::UnknownModel(_))
    ));
    assert!(matches!(keys::create(&pool, u, NewKey { name: " ".into(), channel: "smart".into(), ..Default::default() }).await, Err(keys::KeyError::InvalidName)));
}

#[sqlx::test(migrations = "../../migrations")]
async fn ledger_adjustments(pool: PgPool) {
    let u = customer(&pool, "0").await;
    assert_eq!(ledger::balance(&pool, u).await.unwrap(), cny(0));
    let e = ledger::adjust(&pool, u, cny(12_500_000), LedgerKind::Credit, &memo("top-up"), None).await.unwrap();
    assert_eq!(e.balance_after.micros(), 12_500_000);
    let e = ledger::adjust(&pool, u, cny(-2_500_000), LedgerKind::Debit, &memo("correction"), None).await.unwrap();
    assert_eq!(e.balance_after.micros(), 10_000_000);
    assert!(matches!(
        ledger::adjust(&pool, u, cny(-10_000_001), LedgerKind::Debit, &memo("too much"), None).await,
        Err(LedgerError::Insufficient { available }) if available == cny(10_000_000)
    ));
    assert!(matches!(ledger::adjust(&pool, u, cny(0), LedgerKind::Credit, &memo(""), None).await, Err(LedgerError::ZeroAmount)));
    assert!(matches!(ledger::adjust(&pool, uuid::Uuid::new_v4(), cny(1), LedgerKind::Credit, &memo(""), None).await, Err(LedgerError::UnknownUser)));
    // concurrent credits and debits keep balance = ledger
    let futs: Vec<_> = (0..40)
        .map(|i| {
            let pool = pool.clone();
            async move {
                let amt = if i % 2 == 0 { 1_000_000 } else { -1_500_000 };
                ledger::adjust(&pool, u, cny(amt), LedgerKind::Adjustment, &memo(""), None).await.is_ok()
            }
        })
        .collect();
    futures::future::join_all(futs).await;
    assert!(!ledger::balance(&pool, u).await.unwrap().is_negative());
    assert!(ledger::verify(&pool, u).await.unwrap());
    let entries = ledger::entries(&pool, u, 1000).await.unwrap();
    assert_eq!(entries.last().unwrap().note, "top-up");
    assert_eq!(cny(entries[0].balance_after.micros()), ledger::balance(&pool, u).await.unwrap());
}

#[sqlx::test(migrations = "../../migrations")]
async fn upstream_credentials_are_encrypted(pool: PgPool) {
    let crypto = Crypto::from_secret(SECRET);
    let id = upstreams::create(
        &pool,
        &crypto,
        NewUpstream {
            name: "anthropic".into(),
            base_url: "https://api.anthropic.com/".into(),
            api_key: "sk-ant-api03-VERYSECRET-abcd".into(),
            channels: vec!["stable".into()],
            priority: 5,
            weight: 2,
            concurrency_cap: Some(50),
            enabled: true,
        },
    )
    .await
    .unwrap();
    let dump: String = sqlx::query_scalar("SELECT t::text FROM upstreams t").fetch_one(&pool).await.unwrap();
    assert!(!dump.contains("VERYSECRET"));
    let l = upstreams::list(&pool).await.unwrap();
    assert_eq!(l[0].base_url, "https://api.anthropic.com");
    assert_eq!(l[0].credential_hint, "…abcd");
    assert!(!serde_json::to_string(&l).unwrap().contains("VERYSECRET"));
    let t = upstreams::load_targets(&pool, &crypto).await.unwrap();
    assert_eq!(t[0].credential, "sk-ant-api03-VERYSECRET-abcd");
    assert!(!format!("{:?}", t[0]).contains("VERYSECRET"));
    assert!(upstreams::load_targets(&pool, &Crypto::from_secret("wrong")).await.unwrap().is_empty());
    assert!(upstreams::set_enabled(&pool, id, false).await.unwrap());
    assert!(upstreams::load_targets(&pool, &crypto).await.unwrap().is_empty());
    for bad in ["ftp://x", "http://x/?a=1", "not a url"] {
        let r = upstreams::create(&pool, &crypto, NewUpstream { name: "b".into(), base_url: bad.into(), api_key: "k".into(), channels: vec![], priority: 0, weight: 1, concurrency_cap: None, enabled: true }).await;
        assert!(matches!(r, Err(upstreams::UpstreamError::InvalidUrl)), "{bad}");
    }
    // the demo upstream is only added while there is none
    demo::ensure_demo_upstream(&pool, &crypto, "http://127.0.0.1:3000/_demo").await.unwrap();
    assert_eq!(upstreams::list(&pool).await.unwrap().len(), 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn demo_upstream_when_empty(pool: PgPool) {
    let crypto = Crypto::from_secret(SECRET);
    demo::ensure_demo_upstream(&pool, &crypto, "http://127.0.0.1:3000/_demo").await.unwrap();
    demo::ensure_demo_upstream(&pool, &crypto, "http://127.0.0.1:3000/_demo").await.unwrap();
    let l = upstreams::list(&pool).await.unwrap();
    assert_eq!(l.len(), 1);
    assert!(l[0].is_demo);
    assert_eq!(l[0].channels, vec!["value", "smart", "stable"]);
}

#[sqlx::test(migrations = "../../migrations")]
async fn admin_api_end_to_end(pool: PgPool) {
    let crypto = Crypto::from_secret(SECRET);
    let fake = demo::FakeUpstream::start(demo::FakeBehavior::default()).await.unwrap();
    let gw = Gw::start(&pool, fast_config()).await;
    let app = axum::Router::new().nest("/api/admin/v1", admin_api::router(pool.clone(), crypto, Some(gw.gw.clone()), Default::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/admin/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let staff = cloudrouter_core::accounts::create_user(&pool, "boss@example.com", "correct horse battery staple 9").await.unwrap();
    let customer_user = cloudrouter_core::accounts::create_user(&pool, "cust@example.com", "correct horse battery staple 9").await.unwrap();
    assert!(matches!(admin_api::issue_token(&pool, "cust@example.com", None).await, Err(admin_api::AdminError::NotStaff)));
    assert!(matches!(admin_api::issue_token(&pool, "nobody@example.com", None).await, Err(admin_api::AdminError::UnknownUser)));
    sqlx::query("UPDATE users SET role = 'staff' WHERE id = $1").bind(staff.id).execute(&pool).await.unwrap();
    let token = admin_api::issue_token(&pool, "BOSS@example.com", None).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM admin_tokens WHERE token_hash = sha256($1::text::bytea)").bind(&token).fetch_one(&pool).await.unwrap();
    assert_eq!(stored, 1, "stored hashed");
    let c = client();

    assert_eq!(c.get(format!("{base}/usage")).send().await.unwrap().status(), 401);
    assert_eq!(c.get(format!("{base}/usage")).bearer_auth("cra-wrong").send().await.unwrap().status(), 401);

    let r = c.post(format!("{base}/users")).bearer_auth(&token).json(&serde_json::json!({"email": "new@example.com", "password": "correct horse battery staple 9"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let uid = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let r = c.post(format!("{base}/users")).bearer_auth(&token).json(&serde_json::json!({"email": "new@example.com", "password": "correct horse battery staple 9"})).send().await.unwrap();
    assert_eq!(r.status(), 409);

    let r = c.post(format!("{base}/users/{uid}/credit")).bearer_auth(&token).json(&serde_json::json!({"amount": "12.50", "note": "wire", "idempotency_key": "data-test-0001"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["balance_micros"], 12_500_000);
    let r = c.post(format!("{base}/users/{uid}/credit")).bearer_auth(&token).json(&serde_json::json!({"amount": "-100", "note": "x", "idempotency_key": "data-test-0002"})).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let r = c.post(format!("{base}/users/{uid}/credit")).bearer_auth(&token).json(&serde_json::json!({"amount": "1.2345678", "idempotency_key": "data-test-0003"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c.post(format!("{base}/users/{uid}/credit")).bearer_auth(&token).json(&serde_json::json!({"amount": "-2.5", "note": "refund reversal", "idempotency_key": "data-test-0004"})).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["balance"], "10.000000");
    let e = ledger::entries(&pool, uid.parse().unwrap(), 10).await.unwrap();
    assert_eq!(e[0].actor_id, Some(staff.id));
    assert_eq!(e[0].kind.as_str(), "debit");

    let v: serde_json::Value = c.get(format!("{base}/users/{uid}")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!((v["email"].as_str(), v["balance"].as_str(), v["status"].as_str()), (Some("new@example.com"), Some("10.000000"), Some("active")));
    assert_eq!(c.get(format!("{base}/users/{}", uuid::Uuid::new_v4())).bearer_auth(&token).send().await.unwrap().status(), 404);

    let r = c.post(format!("{base}/upstreams")).bearer_auth(&token)
        .json(&serde_json::json!({"name": "fake", "base_url": fake.base_url, "api_key": "sk-fake-cred", "channels": ["value", "smart"], "priority": 1, "weight": 3}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r = c.post(format!("{base}/users/{uid}/keys")).bearer_auth(&token).json(&serde_json::json!({"name": "auto", "channel": "smart"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<serde_json::Value>().await.unwrap()["key"].as_str().unwrap().to_string();
    let r = c.post(format!("{base}/users/{uid}/keys")).bearer_auth(&token).json(&serde_json::json!({"name": "auto", "channel": "platinum"})).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // the new upstream and key work through the gateway at once
    let mut ok = false;
    for _ in 0..50 {
        if post(&gw.base, &key, &body("claude-haiku-5-5", false)).await.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok);
    gw.sync().await;
    let v: serde_json::Value = c.get(format!("{base}/usage?user_id={uid}")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["requested_model"], "claude-haiku-5-5");
    let v: serde_json::Value = c.get(format!("{base}/upstreams")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert!(!v.to_string().contains("sk-fake-cred"));
    assert_eq!(v["data"][0]["health"]["circuit"], "closed");

    // a suspended staff member's token stops working
    cloudrouter_core::accounts::set_suspended(&pool, staff.id, true).await.unwrap();
    assert_eq!(c.get(format!("{base}/usage")).bearer_auth(&token).send().await.unwrap().status(), 401);
    let _ = customer_user;
    gw.stop().await;
}

/// Migration 0009: usage rows name existing users (checked once per statement, not per row by a
/// foreign key), lock them against deletion until commit, and go when their user goes.
#[sqlx::test(migrations = "../../migrations")]
async fn usage_rows_need_their_user(pool: PgPool) {
    let (a, b) = (customer(&pool, "0").await, customer(&pool, "0").await);
    let insert = |ids: Vec<&'static str>, users: Vec<uuid::Uuid>| {
        sqlx::query(
            "INSERT INTO usage_records (id, created_at, user_id, channel, endpoint, requested_model, stream, status, outcome) \
             SELECT i, now(), u, 'smart', 'messages', 'claude-haiku-5-5', false, 200, 'ok' FROM UNNEST($1::text[], $2::uuid[]) AS x(i, u)",
        )
        .bind(ids)
        .bind(users)
    };
    let code = |e: sqlx::Error| e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
    // one unknown user among known ones refuses the whole statement
    let e = insert(vec!["r1", "r2", "r3"], vec![a, uuid::Uuid::new_v4(), b]).execute(&pool).await.unwrap_err();
    assert_eq!(code(e).as_deref(), Some("23503"));
    insert(vec!["r1", "r2", "r3"], vec![a, a, b]).execute(&pool).await.unwrap();
    let e = sqlx::query("UPDATE usage_records SET user_id = $1 WHERE id = 'r3'").bind(uuid::Uuid::new_v4()).execute(&pool).await.unwrap_err();
    assert_eq!(code(e).as_deref(), Some("23503"));
    let e = sqlx::query("UPDATE users SET id = gen_random_uuid() WHERE id = $1").bind(b).execute(&pool).await.unwrap_err();
    assert_eq!(code(e).as_deref(), Some("23503"));

    // a user named by an uncommitted insert cannot be deleted until it commits; then the
    // delete takes the new rows with it
    let mut tx = pool.begin().await.unwrap();
    insert(vec!["r4"], vec![b]).execute(&mut *tx).await.unwrap();
    let deleting = tokio::spawn({
        let pool = pool.clone();
        async move { sqlx::query("DELETE FROM users WHERE id = $1").bind(b).execute(&pool).await.unwrap() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!deleting.is_finished(), "the delete waits for the inserting transaction");
    tx.commit().await.unwrap();
    deleting.await.unwrap();
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM usage_records ORDER BY id").fetch_all(&pool).await.unwrap();
    assert_eq!(left, vec!["r1", "r2"]);
    // and a deleted user cannot be named afterwards
    let e = insert(vec!["r5"], vec![b]).execute(&pool).await.unwrap_err();
    assert_eq!(code(e).as_deref(), Some("23503"));
}

/// Rows written before ledger memos existed carry English notes; migration 0019 gives each the
/// memo its note stands for, so the console words old rows in Chinese too.
#[sqlx::test(migrations = false)]
async fn old_ledger_notes_become_memos(pool: PgPool) {
    use cloudrouter_core::billing::ledger::{EndReason, Memo};
    let all = sqlx::migrate!("../../migrations");
    let mut before = sqlx::migrate!("../../migrations");
    before.migrations = all.migrations.iter().filter(|m| m.version < 19).cloned().collect::<Vec<_>>().into();
    before.run(&pool).await.unwrap();
    // a user as the schema before 0019 holds one (the accounts code reads later columns)
    let u: uuid::Uuid = sqlx::query_scalar("INSERT INTO users (email, password_hash) VALUES ('old@example.com', 'x') RETURNING id").fetch_one(&pool).await.unwrap();
    let notes = [
        ("credit", "wallet", "Top-up CR-7K3M9Q via WeChat Pay"),
        ("purchase", "wallet", "Pro plan subscription (order CR-AAAAAA)"),
        ("refund", "wallet", "Refund of order CR-AAAAAA (Pro plan) to balance"),
        ("grant", "trial", "Trial credit, valid until 2026-12-02 10:00 UTC"),
        ("grant", "allowance", "Pro plan allowance (USD list price) for the cycle starting 2026-11-01"),
        ("expiry", "allowance", "Plan allowance removed: renewal not paid"),
        ("expiry", "allowance", "Unused plan allowance of the ended cycle"),
        ("credit", "wallet", "Credit from CloudRouter support"),
        ("debit", "wallet", "Paid back in cash"),
        ("usage", "wallet", "API usage"),
    ];
    for (kind, source, note) in notes {
        sqlx::query("INSERT INTO ledger_entries (user_id, amount_micros, balance_after_micros, kind, source, note) VALUES ($1, 1, 1, $2, $3, $4)")
            .bind(u)
            .bind(kind)
            .bind(source)
            .bind(note)
            .execute(&pool)
            .await
            .unwrap();
    }
    all.run(&pool).await.unwrap();
    let mut memos: Vec<Option<Memo>> = ledger::entries(&pool, u, 100).await.unwrap().into_iter().map(|e| e.memo).collect();
    memos.reverse();
    let until = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z").unwrap().to_utc();
    assert_eq!(
        memos,
        vec![
            Some(Memo::Topup { order: "CR-7K3M9Q".into(), method: PaymentMethod::Wechat }),
            Some(Memo::Subscription { plan: "Pro".into(), order: "CR-AAAAAA".into() }),
            Some(Memo::Refund { order: "CR-AAAAAA".into(), plan: "Pro".into() }),
            Some(Memo::TrialGranted { until }),
            Some(Memo::AllowanceGranted { plan: "Pro".into(), cycle_start: chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap() }),
            Some(Memo::AllowanceRemoved { reason: EndReason::RenewalNotPaid }),
            Some(Memo::AllowanceLapsed),
            Some(Memo::Staff { text: None }),
            Some(Memo::Staff { text: Some("Paid back in cash".into()) }),
            None,
        ]
    );
}
