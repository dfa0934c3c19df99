//! Accounts through the real HTTP surface: server functions, sessions and guards, against a
//! fresh Postgres database per test.

use cloudrouter_core::{accounts, db};
use leptos::prelude::LeptosOptions;
use reqwest::{redirect::Policy, Client, StatusCode};
use server::config::Config;
use sqlx::PgPool;

const PASSWORD: &str = "Sturdy-pass-2026";

struct App {
    base: String,
    pool: PgPool,
}

async fn start(pool: PgPool) -> App {
    db::migrate(&pool).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The harness's fixed secret: the server refuses to run without one.
    let config = Config { secret: "test-server-secret".into(), ..Config::from_env(addr) };
    let leptos = LeptosOptions::builder().output_name("cloudrouter").site_addr(addr).build();
    let router = server::build(pool.clone(), &config, leptos).await.unwrap().router;
    tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.unwrap();
    });
    App { base: format!("http://{addr}"), pool }
}

/// A browser-like client with its own cookie jar, calling server functions as the hydrated app does.
fn client() -> Client {
    Client::builder().cookie_store(true).redirect(Policy::none()).build().unwrap()
}

impl App {
    async fn call(&self, c: &Client, name: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let res = c
            .post(format!("{}/api/{name}", self.base))
            .header("accept", "application/json")
            .form(form)
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }

    async fn signup(&self, c: &Client, email: &str) -> (StatusCode, String) {
        self.call(c, "signup", &[("email", email), ("password", PASSWORD), ("confirm", PASSWORD)]).await
    }

    async fn login(&self, c: &Client, email: &str, password: &str) -> (StatusCode, String) {
        self.call(c, "login", &[("email", email), ("password", password)]).await
    }

    async fn me(&self, c: &Client) -> String {
        self.call(c, "me", &[]).await.1
    }
}

#[sqlx::test(migrations = false)]
async fn signup_signs_in_and_logout_signs_out(pool: PgPool) {
    let app = start(pool).await;
    let c = client();
    let (status, _) = app.signup(&c, "dana@example.com").await;
    assert!(status.is_success(), "{status}");
    assert!(app.me(&c).await.contains("dana@example.com"));

    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'dana@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "passwords are stored as argon2id hashes");

    let (status, _) = app.call(&c, "logout", &[]).await;
    assert!(status.is_success());
    assert_eq!(app.me(&c).await, "null");
}

#[sqlx::test(migrations = false)]
async fn login_checks_the_password_and_renews_the_session(pool: PgPool) {
    let app = start(pool).await;
    app.signup(&client(), "erin@example.com").await;

    let c = client();
    // Visit a page first so the session cookie exists before login.
    c.get(format!("{}/login", app.base)).send().await.unwrap();
    let (status, body) = app.login(&c, "erin@example.com", "Wrong-password-1").await;
    assert!(!status.is_success());
    assert!(body.contains("Wrong email or password."), "{body}");
    assert_eq!(app.me(&c).await, "null");

    let (status, _) = app.login(&c, "ERIN@example.com", PASSWORD).await;
    assert!(status.is_success());
    assert!(app.me(&c).await.contains("erin@example.com"));
}

#[sqlx::test(migrations = false)]
async fn duplicate_email_and_weak_password_are_refused(pool: PgPool) {
    let app = start(pool).await;
    app.signup(&client(), "fay@example.com").await;
    let (status, body) = app.signup(&client(), "Fay@Example.com").await;
    assert!(!status.is_success());
    assert!(body.contains("already exists"), "{body}");

    let (_, body) = app.call(&client(), "signup", &[("email", "gus@example.com"), ("password", "short"), ("confirm", "short")]).await;
    assert!(body.contains("at least 10 characters"), "{body}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 1, "nothing half-written");
}

#[sqlx::test(migrations = false)]
async fn repeated_failures_lock_the_account_for_a_while(pool: PgPool) {
    let app = start(pool).await;
    app.signup(&client(), "hal@example.com").await;
    let c = client();
    for _ in 0..5 {
        app.login(&c, "hal@example.com", "Wrong-password-1").await;
    }
    // Even the right password is refused now.
    let (status, body) = app.login(&c, "hal@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("Too many failed sign-in attempts"), "{body}");
}

#[sqlx::test(migrations = false)]
async fn staff_functions_refuse_customers(pool: PgPool) {
    let app = start(pool).await;
    let customer = client();
    app.signup(&customer, "ivy@example.com").await;
    let (status, body) = app.call(&customer, "admin/users", &[("query", "")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("staff only"), "{body}");

    let anonymous = client();
    let (status, _) = app.call(&anonymous, "admin/users", &[("query", "")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // `server admin create` is idempotent: it promotes an existing account.
    accounts::ensure_staff(&app.pool, "ivy@example.com", PASSWORD).await.unwrap();
    accounts::ensure_staff(&app.pool, "ivy@example.com", PASSWORD).await.unwrap();
    let (status, body) = app.call(&customer, "admin/users", &[("query", "ivy")]).await;
    assert!(status.is_success(), "{status} {body}");
    assert!(body.contains("ivy@example.com"));
}

#[sqlx::test(migrations = false)]
async fn console_pages_redirect_to_sign_in_and_cross_site_posts_are_refused(pool: PgPool) {
    let app = start(pool).await;
    let c = client();
    let res = c.get(format!("{}/console/keys", app.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/login?next=/console/keys");

    let res = c
        .post(format!("{}/api/signup", app.base))
        .header("origin", "https://evil.example")
        .form(&[("email", "jo@example.com"), ("password", PASSWORD), ("confirm", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 0);

    let res = c.get(format!("{}/no-such-page", app.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test(migrations = false)]
async fn old_failed_logins_are_forgotten(pool: PgPool) {
    db::migrate(&pool).await.unwrap();
    sqlx::query("INSERT INTO login_failures (email, ip, failed_at) VALUES ('a@b.co', '1.2.3.4', now() - interval '16 minutes'), ('a@b.co', '1.2.3.4', now())")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(accounts::prune_login_failures(&pool).await.unwrap(), 1);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM login_failures").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 1, "failures inside the window still count");
}

/// Signing in (and switching language) sends the browser on only to a path of this site: an
/// attacker's `next` or `back` link falls back to the console home.
#[sqlx::test(migrations = false)]
async fn sign_in_next_cannot_send_the_browser_to_another_site(pool: PgPool) {
    let app = start(pool).await;
    app.signup(&client(), "lee@example.com").await;
    let post = |name: &'static str, form: Vec<(&'static str, String)>| {
        let base = app.base.clone();
        async move {
            let res = client()
                .post(format!("{base}/api/{name}"))
                .header("accept", "text/html")
                .form(&form)
                .send()
                .await
                .unwrap();
            assert!(res.status().is_redirection(), "{name}: {}", res.status());
            res.headers()["location"].to_str().unwrap().to_string()
        }
    };
    let hostile = ["//evil.example", "/\\evil.example", "/%09/evil.example", "/\t/evil.example", "/%2F%2Fevil.example", "\\\\evil", "https://evil.example", "/%FF%C0%AF"];
    for h in hostile {
        let login = vec![("email", "lee@example.com".to_string()), ("password", PASSWORD.to_string()), ("next", h.to_string())];
        assert_eq!(post("login", login).await, "/console", "next={h:?}");
        assert_eq!(post("set_language", vec![("lang", "en".to_string()), ("back", h.to_string())]).await, "/", "back={h:?}");
    }
    let login = vec![("email", "lee@example.com".to_string()), ("password", PASSWORD.to_string()), ("next", "/console/keys".to_string())];
    assert_eq!(post("login", login).await, "/console/keys", "a local path is kept");
}
