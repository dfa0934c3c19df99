//! The public status page and `/status.json` on the assembled app: no sign-in, cached and
//! cacheable, the schema docs/status.md documents; staff post incidents (audited) and the
//! signed-out page shows them in both languages.

mod common;

use common::{client, spawn_app, TestApp};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Usage records written straight to the table (the rollup's triggers see them as the writer's).
async fn usage(pool: &PgPool, channel: &str, statuses: &[(i32, &str)]) {
    let user: Uuid = sqlx::query_scalar("INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id")
        .bind(format!("{}@example.com", Uuid::new_v4()))
        .fetch_one(pool)
        .await
        .unwrap();
    for (status, outcome) in statuses {
        sqlx::query(
            "INSERT INTO usage_records (id, created_at, user_id, channel, endpoint, requested_model, stream, status, outcome, latency_ms) \
             VALUES ($1, now() - interval '1 minute', $2, $3, 'messages', 'claude-sonnet-4-6', false, $4, $5, 700)",
        )
        .bind(format!("req_{}", Uuid::new_v4().simple()))
        .bind(user)
        .bind(channel)
        .bind(status)
        .bind(outcome)
        .execute(pool)
        .await
        .unwrap();
    }
}

async fn status_json(app: &TestApp) -> (reqwest::header::HeaderMap, Value) {
    let res = client().get(format!("{}/status.json", app.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    (res.headers().clone(), res.json().await.unwrap())
}

/// Object keys at every depth (the first element stands for an array): what the schema promises.
fn shape(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(format!("{at}.{k}"));
                shape(v, &format!("{at}.{k}"), out);
            }
        }
        Value::Array(a) => {
            if let Some(first) = a.first() {
                shape(first, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

fn keys(v: &Value) -> Vec<String> {
    let mut out = vec![];
    shape(v, "", &mut out);
    out.sort();
    out.dedup();
    out
}

/// The example of docs/status.md, with its empty `resolved_incidents` shaped like the open ones.
fn documented_example() -> Value {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/status.md")).unwrap();
    let json = doc.split("```json").nth(1).and_then(|rest| rest.split("```").next()).expect("a JSON example in docs/status.md");
    let mut v: Value = serde_json::from_str(json).unwrap();
    v["resolved_incidents"] = v["open_incidents"].clone();
    v
}

#[sqlx::test(migrations = false)]
async fn status_json_is_public_cached_and_shaped_as_documented(pool: PgPool) {
    let app = spawn_app(pool).await;
    usage(&app.pool, "value", &[(200, "ok"), (200, "ok"), (200, "ok"), (503, "upstream_error"), (402, "gateway_error")]).await;

    let (headers, v) = status_json(&app).await;
    assert_eq!(headers["cache-control"], "public, max-age=30");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(headers.get("set-cookie").is_none(), "no session for a public poll");
    assert_eq!((v["schema_version"].as_u64(), v["condition"].as_str(), v["day_utc_offset"].as_str()), (Some(1), Some("operational"), Some("+08:00")));
    let codes: Vec<&str> = v["channels"].as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["value", "smart", "stable"]);
    let value = &v["channels"][0];
    let expected = serde_json::json!({"requests": 4, "failures": 1, "availability_percent": 75.0, "median_latency_ms": 761, "median_ttft_ms": null});
    assert_eq!(value["last_24_hours"], expected, "the 402 is the customer's own; 700 ms is reported as its bucket's middle");
    let days = value["days"].as_array().unwrap();
    assert_eq!(days.len(), 90);
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).format("%Y-%m-%d").to_string();
    assert_eq!(days[89]["date"], today);
    assert_eq!(days[89]["requests"], 4);
    assert_eq!(days[0]["availability_percent"], Value::Null, "a day without traffic is no data");

    // within the cache's 30 s another failure does not show; posting an incident refreshes it
    usage(&app.pool, "value", &[(504, "upstream_error")]).await;
    assert_eq!(status_json(&app).await.1["channels"][0]["last_24_hours"]["failures"], 1);
    let staff = client();
    app.staff(&staff, "ops@example.com").await;
    let (status, body) = app
        .call(&staff, "admin/incidents/open", &[("title_en", "Slow answers"), ("title_zh", "响应变慢"), ("impact", "minor"), ("channels", "value"), ("status", "investigating"), ("message_en", "Looking into it."), ("message_zh", "")])
        .await;
    assert!(status.is_success(), "{status} {body}");
    let (_, v) = status_json(&app).await;
    assert_eq!(v["channels"][0]["last_24_hours"]["failures"], 2);
    assert_eq!((v["condition"].as_str(), v["channels"][0]["condition"].as_str()), (Some("degraded"), Some("degraded")));
    assert_eq!(v["open_incidents"][0]["updates"][0]["message"], serde_json::json!({"en": "Looking into it.", "zh": "Looking into it."}));

    let id = v["open_incidents"][0]["id"].as_str().unwrap().to_string();
    let (status, body) = app.call(&staff, "admin/incidents/update", &[("id", &id), ("status", "resolved"), ("impact", "minor"), ("message_en", "Fixed."), ("message_zh", "已修复。")]).await;
    assert!(status.is_success(), "{status} {body}");
    let (_, mut v) = status_json(&app).await;
    assert_eq!(v["condition"], "operational");
    assert_eq!(v["resolved_incidents"][0]["id"], id.as_str());
    // the documented example has every field, at every depth, and no other
    v["open_incidents"] = v["resolved_incidents"].clone();
    assert_eq!(keys(&v), keys(&documented_example()));
}

#[sqlx::test(migrations = false)]
async fn staff_post_incidents_audited_and_the_signed_out_page_shows_them_in_both_languages(pool: PgPool) {
    let app = spawn_app(pool).await;
    let customer = client();
    app.signup(&customer, "lee@example.com").await;
    let form = [
        ("title_en", "High-Speed Stable is down"),
        ("title_zh", "高速稳定渠道不可用"),
        ("impact", "major"),
        ("channels", "stable"),
        ("status", "identified"),
        ("message_en", "An upstream region failed; moving traffic."),
        ("message_zh", "一个上游区域故障，正在转移流量。"),
    ];
    let (status, _) = app.call(&customer, "admin/incidents/open", &form).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "customers cannot post");

    let staff = client();
    app.staff(&staff, "ops@example.com").await;
    let mut bad = form;
    bad[2].1 = "catastrophic";
    let (status, body) = app.call(&staff, "admin/incidents/open", &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Choose one of the options."), "{body}");
    let (status, body) = app.call(&staff, "admin/incidents/open", &form).await;
    assert!(status.is_success(), "{status} {body}");

    let audit: Vec<(String, String, String)> =
        sqlx::query_as("SELECT a.action, a.target, u.email FROM audit_log a JOIN users u ON u.id = a.staff_id").fetch_all(&app.pool).await.unwrap();
    let id: Uuid = sqlx::query_scalar("SELECT id FROM incidents").fetch_one(&app.pool).await.unwrap();
    assert_eq!(audit, [("incident.open".to_string(), format!("incident:{id}"), "ops@example.com".to_string())]);

    let page = |lang: &'static str| {
        let base = app.base.clone();
        async move {
            let res = client().get(format!("{base}/status")).header("cookie", format!("cloudrouter_lang={lang}")).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "no sign-in needed");
            res.text().await.unwrap()
        }
    };
    let en = page("en").await;
    for words in ["Major outage in progress", "High-Speed Stable is down", "Identified", "An upstream region failed; moving traffic.", "No data"] {
        assert!(en.contains(words), "{words:?} on the English page");
    }
    let zh = page("zh").await;
    for words in ["正在发生重大故障", "高速稳定渠道不可用", "已查明原因", "一个上游区域故障，正在转移流量。", "无数据"] {
        assert!(zh.contains(words), "{words:?} on the Chinese page");
    }
    assert!(!zh.contains("High-Speed Stable is down"));

    let (status, _) = app.call(&staff, "admin/incidents/update", &[("id", &id.to_string()), ("status", "resolved"), ("impact", "major"), ("message_en", "Recovered."), ("message_zh", "")]).await;
    assert!(status.is_success());
    let en = page("en").await;
    assert!(en.contains("All systems operational") && en.contains("Recovered."), "resolved: the headline clears and the incident is in the past");
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log ORDER BY id").fetch_all(&app.pool).await.unwrap();
    assert_eq!(actions, ["incident.open", "incident.update"]);
    let landing = client().get(format!("{}/", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(landing.contains("href=\"/status\""), "the landing page links the status page");
}
