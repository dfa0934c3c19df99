//! The assembled server: the staff API, the gateway and the demo upstream on one port, as
//! `server` serves them, driven the way an operator and a customer would.

use cloudrouter_core::{accounts, admin_api};
use serde_json::{json, Value};
use sqlx::PgPool;

mod common;

/// The app as `server` serves it (see `common::spawn_app`): its base URL and the running parts.
async fn start(pool: PgPool) -> (String, server::Built) {
    let app = common::spawn_app(pool).await;
    (app.base, app.built)
}

#[sqlx::test(migrations = false)]
async fn staff_api_sets_up_a_customer_who_calls_the_demo_upstream(pool: PgPool) {
    let (base, built) = start(pool.clone()).await;
    accounts::ensure_staff(&pool, "ops@example.com", "Sturdy-pass-2026").await.unwrap();
    let token = admin_api::issue_token(&pool, "ops@example.com", None).await.unwrap();
    let http = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}/api/admin/v1{path}")).bearer_auth(&token)
    };

    let refused = http.get(format!("{base}/api/admin/v1/users/00000000-0000-0000-0000-000000000000")).send().await.unwrap();
    assert_eq!(refused.status(), 401, "no token, no access");

    let user: Value = admin(reqwest::Method::POST, "/users")
        .json(&json!({"email": "kim@example.com", "password": "Sturdy-pass-2026"}))
        .send().await.unwrap().json().await.unwrap();
    let id = user["id"].as_str().unwrap().to_string();
    let credit = admin(reqwest::Method::POST, &format!("/users/{id}/credit"))
        .json(&json!({"amount": "12.50", "note": "welcome credit", "idempotency_key": "assembly-welcome-credit"}))
        .send().await.unwrap();
    assert!(credit.status().is_success(), "{}", credit.text().await.unwrap());
    let key: Value = admin(reqwest::Method::POST, &format!("/users/{id}/keys"))
        .json(&json!({"name": "ci", "channel": "value"}))
        .send().await.unwrap().json().await.unwrap();
    let secret = key["key"].as_str().unwrap();

    // The demo upstream answers through the gateway on the same port, with Bearer auth.
    let res = http
        .post(format!("{base}/v1/messages?beta=true"))
        .bearer_auth(secret)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-haiku-4-5-20251001", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("request-id"));
    let msg: Value = res.json().await.unwrap();
    let (input, output) = (msg["usage"]["input_tokens"].as_i64().unwrap(), msg["usage"]["output_tokens"].as_i64().unwrap());

    // Settlement is batched off the request path; the shutdown flush makes it final.
    built.gateway.shutdown().await;
    let usage: Value = admin(reqwest::Method::GET, &format!("/usage?user_id={id}")).send().await.unwrap().json().await.unwrap();
    let rows = usage["data"].as_array().or(usage.as_array()).expect("usage list").clone();
    assert_eq!(rows.len(), 1, "{usage}");
    assert_eq!((rows[0]["input_tokens"].as_i64(), rows[0]["output_tokens"].as_i64()), (Some(input), Some(output)), "flat token fields");
    assert!(rows[0].get("off_plan").is_none(), "settlement detail, not part of the record");
    // Haiku 4.5 lists at $1 / $5 per million tokens; Value charges ¥0.6 per $1 (no cache here).
    let cached = msg["usage"]["cache_read_input_tokens"].as_i64().unwrap_or(0) + msg["usage"]["cache_creation_input_tokens"].as_i64().unwrap_or(0);
    if cached == 0 {
        let micro_usd = input + output * 5;
        let charge = (micro_usd * 6 + 5) / 10; // ×0.6, rounded half up once
        let balance: i64 = sqlx::query_scalar("SELECT balance_micros FROM balances WHERE user_id = $1::uuid")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(balance, 12_500_000 - charge);
    }
}

/// The staff API sets the per-key controls the console sets, and the assembled server applies
/// them to the gateway with the connection's real address (a forged `X-Forwarded-For` from an
/// untrusted peer is ignored).
#[sqlx::test(migrations = false)]
async fn staff_api_keys_carry_ip_allow_lists_token_limits_and_client_rules(pool: PgPool) {
    let (base, _built) = start(pool.clone()).await;
    accounts::ensure_staff(&pool, "ops@example.com", "Sturdy-pass-2026").await.unwrap();
    let token = admin_api::issue_token(&pool, "ops@example.com", None).await.unwrap();
    let http = reqwest::Client::new();
    let user: Value = http.post(format!("{base}/api/admin/v1/users")).bearer_auth(&token)
        .json(&json!({"email": "ip@example.com", "password": "Sturdy-pass-2026"}))
        .send().await.unwrap().json().await.unwrap();
    let id = user["id"].as_str().unwrap().to_string();
    let credit = http.post(format!("{base}/api/admin/v1/users/{id}/credit")).bearer_auth(&token)
        .json(&json!({"amount": "5", "note": "test", "idempotency_key": "ip-credit"})).send().await.unwrap();
    assert!(credit.status().is_success());
    let make = |body: Value| http.post(format!("{base}/api/admin/v1/users/{id}/keys")).bearer_auth(&token).json(&body).send();
    let office: Value = make(json!({"name": "office", "channel": "value", "ip_allow": ["198.51.100.0/24", "2001:db8::/32"], "tpm_limit": 100000, "rpm_limit": 60, "concurrency_limit": 2, "clients": "sdk"}))
        .await.unwrap().json().await.unwrap();
    assert_eq!(office["ip_allow"], json!(["198.51.100.0/24", "2001:db8::/32"]));
    assert_eq!((office["tpm_limit"].as_i64(), office["clients"].as_str()), (Some(100000), Some("sdk")));
    let here: Value = make(json!({"name": "here", "channel": "value", "ip_allow": ["127.0.0.1"], "clients": "claude_code"})).await.unwrap().json().await.unwrap();
    let bad = make(json!({"name": "bad", "channel": "value", "ip_allow": ["not-an-address"]})).await.unwrap();
    assert_eq!(bad.status(), 400);
    let bad = make(json!({"name": "bad", "channel": "value", "clients": "browser"})).await.unwrap();
    assert_eq!(bad.status(), 400);

    let call = |key: &str, forwarded: Option<&str>| {
        let mut r = http.post(format!("{base}/v1/messages")).bearer_auth(key).header("anthropic-version", "2023-06-01")
            .header("user-agent", "claude-cli/2.1.3 (external, cli)").header("x-stainless-lang", "js");
        if let Some(f) = forwarded {
            r = r.header("x-forwarded-for", f);
        }
        r.json(&json!({"model": "claude-haiku-4-5-20251001", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})).send()
    };
    let refused = call(office["key"].as_str().unwrap(), Some("198.51.100.7")).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["type"], "permission_error");
    assert_eq!(call(here["key"].as_str().unwrap(), None).await.unwrap().status(), 200);
}

/// The staff API answers malformed ids, dates, amounts and bodies with a 4xx in the gateway's
/// error shape (`type`, `error.type`, `error.message`, `request_id`, and a `request-id` header).
#[sqlx::test(migrations = false)]
async fn staff_api_answers_hostile_input_with_4xx_in_the_error_shape(pool: PgPool) {
    let (base, _built) = start(pool.clone()).await;
    accounts::ensure_staff(&pool, "ops@example.com", "Sturdy-pass-2026").await.unwrap();
    let token = admin_api::issue_token(&pool, "ops@example.com", None).await.unwrap();
    let customer = accounts::create_user(&pool, "kim@example.com", "Sturdy-pass-2026").await.unwrap().id;
    let http = reqwest::Client::new();
    let mut failures = vec![];
    let mut check = async |what: String, req: reqwest::RequestBuilder| {
        let res = req.send().await;
        let Ok(res) = res else { return failures.push(format!("{what}: connection dropped")) };
        let status = res.status();
        let rid = res.headers().get("request-id").is_some();
        let body = res.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let shaped = v["type"] == "error" && v["error"]["type"].is_string() && v["error"]["message"].is_string() && v["request_id"].is_string() && rid;
        if !status.is_client_error() || !shaped {
            failures.push(format!("{what}: {status} {body:.200}"));
        }
    };
    let api = |path: &str| format!("{base}/api/admin/v1{path}");
    check("no token".into(), http.get(api("/upstreams"))).await;
    check("wrong token".into(), http.get(api("/upstreams")).bearer_auth("cra-not-a-token")).await;
    for id in ["not-a-uuid", "%FF%FE", "123", "00000000-0000-0000-0000-00000000000g"] {
        check(format!("GET /users/{id}"), http.get(api(&format!("/users/{id}"))).bearer_auth(&token)).await;
        check(format!("GET /users/{id}/keys"), http.get(api(&format!("/users/{id}/keys"))).bearer_auth(&token)).await;
    }
    for q in ["since=-262143-01-01T00:00:00Z", "until=%2B275760-09-13T00:00:00Z", "since=-262144-01-01T00:00:00Z", "since=yesterday", "limit=abc", "limit=99999999999999999999", "user_id=nope", "until=%FF"] {
        check(format!("GET /usage?{q}"), http.get(api(&format!("/usage?{q}"))).bearer_auth(&token)).await;
    }
    for amount in ["NaN", "1e9", "-1e9", "99999999999999999999999", "1.1234567", "inf", "", "0", "100000000"] {
        let body = json!({"amount": amount, "note": "hostile", "idempotency_key": format!("hostile-{}", enc_key(amount))});
        check(format!("credit {amount:?}"), http.post(api(&format!("/users/{customer}/credit"))).bearer_auth(&token).json(&body)).await;
    }
    check("credit without a body".into(), http.post(api(&format!("/users/{customer}/credit"))).bearer_auth(&token)).await;
    check("credit with broken JSON".into(), http.post(api(&format!("/users/{customer}/credit"))).bearer_auth(&token).header("content-type", "application/json").body("{\"amount\":")).await;
    check("credit with a number".into(), http.post(api(&format!("/users/{customer}/credit"))).bearer_auth(&token).json(&json!({"amount": 1e308, "note": "n", "idempotency_key": "hostile-number"}))).await;
    for expires in ["-262143-01-01T00:00:00Z", "+262143-12-31T00:00:00Z", "1970-01-01T00:00:00Z"] {
        check(format!("key expiring {expires}"), http.post(api(&format!("/users/{customer}/keys"))).bearer_auth(&token).json(&json!({"name": "k", "channel": "value", "expires_at": expires}))).await;
    }
    check("key with a negative limit".into(), http.post(api(&format!("/users/{customer}/keys"))).bearer_auth(&token).json(&json!({"name": "k", "channel": "value", "rpm_limit": -5}))).await;
    check("key with a huge spend limit".into(), http.post(api(&format!("/users/{customer}/keys"))).bearer_auth(&token).json(&json!({"name": "k", "channel": "value", "spend_limit": "1e9"}))).await;
    check("upstream with a huge priority".into(), http.post(api("/upstreams")).bearer_auth(&token).json(&json!({"name": "u", "base_url": "https://api.anthropic.com", "api_key": "sk", "channels": ["value"], "priority": 1e99}))).await;
    check("upstream at a scheme-relative address".into(), http.post(api("/upstreams")).bearer_auth(&token).json(&json!({"name": "u", "base_url": "//evil.example", "api_key": "sk", "channels": ["value"]}))).await;
    check("user with a NUL".into(), http.post(api("/users")).bearer_auth(&token).json(&json!({"email": "nul\u{0}@example.com", "password": "Sturdy-pass-2026"}))).await;
    check("key named with a NUL".into(), http.post(api(&format!("/users/{customer}/keys"))).bearer_auth(&token).json(&json!({"name": "k\u{0}", "channel": "value"}))).await;
    check("user with a form body".into(), http.post(api("/users")).bearer_auth(&token).form(&[("email", "a@b.co")])).await;
    check("a body above the limit".into(), http.post(api("/users")).bearer_auth(&token).header("content-type", "application/json").body(format!("{{\"email\":\"{}\"}}", "a".repeat(3 << 20)))).await;
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// Every staff API error is the gateway's error, exactly: `{"type":"error","error":{"type",
/// "message"},"request_id"}` and nothing else, the `request-id` header naming the same request, the
/// error type going with the status — unknown calls and methods included (README, "Staff API").
#[sqlx::test(migrations = false)]
async fn staff_api_errors_are_the_gateways_error_shape(pool: PgPool) {
    let (base, _built) = start(pool.clone()).await;
    accounts::ensure_staff(&pool, "ops@example.com", "Sturdy-pass-2026").await.unwrap();
    let token = admin_api::issue_token(&pool, "ops@example.com", None).await.unwrap();
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{base}/api/admin/v1{path}");
    let nobody = "00000000-0000-0000-0000-000000000000";
    let cases = [
        ("no token", http.get(api("/upstreams")), 401, "authentication_error"),
        ("unknown user", http.get(api(&format!("/users/{nobody}"))).bearer_auth(&token), 404, "not_found_error"),
        ("email taken", http.post(api("/users")).bearer_auth(&token).json(&json!({"email": "ops@example.com", "password": "Sturdy-pass-2026"})), 409, "conflict_error"),
        ("unknown call", http.get(api("/no-such-call")).bearer_auth(&token), 404, "not_found_error"),
        ("wrong method", http.delete(api("/users")).bearer_auth(&token), 405, "invalid_request_error"),
    ];
    for (what, req, status, kind) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{what}");
        assert_eq!(res.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"), "{what}");
        let rid = res.headers().get("request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let v: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap_or_default();
        let message = v["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(!message.is_empty(), "{what}: {v}");
        let request_id = rid.clone().unwrap_or_default();
        assert!(request_id.starts_with("req_"), "{what}: request-id header {rid:?}");
        assert_eq!(v, json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}), "{what}");
    }
}

fn enc_key(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Users, keys and upstreams created through the staff API are in the audit log with the acting
/// staff member, written in the same transaction as the creation.
#[sqlx::test(migrations = false)]
async fn staff_api_creations_are_audited_with_the_acting_staff(pool: PgPool) {
    let (base, _built) = start(pool.clone()).await;
    let ops = accounts::ensure_staff(&pool, "ops@example.com", "Sturdy-pass-2026").await.unwrap().id;
    let token = admin_api::issue_token(&pool, "ops@example.com", None).await.unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{base}/api/admin/v1{path}")).bearer_auth(&token).json(&body).send();
    let user: Value = post("/users", json!({"email": "kim@example.com", "password": "Sturdy-pass-2026"})).await.unwrap().json().await.unwrap();
    let uid = user["id"].as_str().unwrap().to_string();
    let key: Value = post(&format!("/users/{uid}/keys"), json!({"name": "ci", "channel": "value"})).await.unwrap().json().await.unwrap();
    let up: Value = post("/upstreams", json!({"name": "real", "base_url": "https://api.anthropic.com", "api_key": "sk-ant-x", "channels": ["value"]})).await.unwrap().json().await.unwrap();
    let rows: Vec<(String, String, uuid::Uuid)> = sqlx::query_as("SELECT action, target, staff_id FROM audit_log ORDER BY id").fetch_all(&pool).await.unwrap();
    assert_eq!(
        rows,
        [
            ("user.create".to_string(), format!("user:{uid}"), ops),
            ("key.create".to_string(), format!("key:{}", key["id"].as_str().unwrap()), ops),
            ("upstream.add".to_string(), format!("upstream:{}", up["id"].as_str().unwrap()), ops),
        ]
    );
    // no audit row, no user
    sqlx::query("CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit log unavailable'; END $$").execute(&pool).await.unwrap();
    sqlx::query("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()").execute(&pool).await.unwrap();
    let res = post("/users", json!({"email": "lou@example.com", "password": "Sturdy-pass-2026"})).await.unwrap();
    assert_eq!(res.status(), 500);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'lou@example.com'").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 0);
}
