//! The one way the server's integration tests start the app: assembled by `server::build` as
//! `server` serves it, on a fresh port, over the test's own Postgres database, mailing a real
//! SMTP server of the test's own.
// Each test file uses a part of this.
#![allow(dead_code)]

pub mod books;
pub mod postgres;
pub mod process;
pub mod smtp;

use cloudrouter_core::db;
use leptos::prelude::LeptosOptions;
use reqwest::{redirect::Policy, Client, StatusCode};
use server::config::Config;
use smtp::SmtpServer;
use sqlx::PgPool;

pub const PASSWORD: &str = "Sturdy-pass-2026";
/// The server secret every test app runs with.
pub const SECRET: &str = "test-server-secret";

pub struct TestApp {
    pub base: String,
    pub pool: PgPool,
    pub mail: SmtpServer,
    pub built: server::Built,
}

/// The settings `server` would read, with the harness's fixed secret (it refuses to run without
/// one) and the test's SMTP server.
pub fn config(addr: std::net::SocketAddr, mail: &SmtpServer) -> Config {
    Config { secret: SECRET.into(), smtp_url: Some(mail.url.clone()), ..Config::from_env(addr) }
}

pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, |_| {}).await
}

/// The app with its settings changed by `adjust`.
pub async fn spawn_app_with(pool: PgPool, adjust: impl FnOnce(&mut Config)) -> TestApp {
    db::migrate(&pool).await.unwrap();
    let mail = SmtpServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = config(addr, &mail);
    adjust(&mut config);
    let leptos = LeptosOptions::builder().output_name("cloudrouter").site_addr(addr).build();
    let built = server::build(pool.clone(), &config, leptos).await.unwrap();
    let router = built.router.clone();
    tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.unwrap();
    });
    TestApp { base: format!("http://{addr}"), pool, mail, built }
}

/// A browser-like client with its own cookie jar, calling server functions as the hydrated app does.
pub fn client() -> Client {
    Client::builder().cookie_store(true).redirect(Policy::none()).no_proxy().build().unwrap()
}

impl TestApp {
    /// Posts to server function `name` as the hydrated app does; the whole answer.
    pub async fn post(&self, c: &Client, name: &str, form: &[(&str, &str)]) -> reqwest::Response {
        c.post(format!("{}/api/{name}", self.base)).header("accept", "application/json").form(form).send().await.unwrap()
    }

    pub async fn call(&self, c: &Client, name: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let res = self.post(c, name, form).await;
        (res.status(), res.text().await.unwrap())
    }

    /// Asks for an account (the form's post); the answer says nothing about the address.
    pub async fn request_signup(&self, c: &Client, email: &str) -> (StatusCode, String) {
        self.call(c, "signup", &[("email", email), ("password", PASSWORD), ("confirm", PASSWORD)]).await
    }

    /// Signs up as a person does: the form, then the link from the mail, which signs `c` in.
    pub async fn signup(&self, c: &Client, email: &str) -> (StatusCode, String) {
        let n = self.mail.to(email).len() + 1;
        let asked = self.request_signup(c, email).await;
        assert!(asked.0.is_success(), "sign-up request: {asked:?}");
        let token = self.mail.nth_to(email, n).await.token("/signup/confirm").expect("a confirmation link");
        self.call(c, "confirm_signup", &[("token", &token)]).await
    }

    pub async fn login(&self, c: &Client, email: &str, password: &str) -> (StatusCode, String) {
        self.call(c, "login", &[("email", email), ("password", password)]).await
    }

    /// Waits (up to 10 s) until the outbox has sent everything queued.
    pub async fn mail_sent(&self) {
        for _ in 0..100 {
            let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL")
                .fetch_one(&self.pool)
                .await
                .unwrap();
            if waiting == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the outbox did not empty within 10 s");
    }

    pub async fn me(&self, c: &Client) -> String {
        self.call(c, "me", &[]).await.1
    }
}

/// The harness's server secret, as the server derives its key from it (to read what it stored).
pub fn crypto() -> cloudrouter_core::crypto::Crypto {
    cloudrouter_core::crypto::Crypto::from_secret(SECRET)
}

/// The code the authenticator app shows now for the account's secret, `steps` steps away.
pub async fn app_code(pool: &PgPool, email: &str, column: &str, steps: i64) -> String {
    use cloudrouter_core::totp;
    let stored: Vec<u8> = sqlx::query_scalar(&format!("SELECT {column} FROM users WHERE email = $1")).bind(email).fetch_one(pool).await.unwrap();
    let secret = crypto().decrypt(&stored).unwrap();
    totp::code_at(&secret, chrono::Utc::now().timestamp() / totp::STEP_SECS + steps)
}

impl TestApp {
    /// Turns two-factor sign-in on for the signed-in `c` (as a person does in Settings); the recovery codes.
    pub async fn enable_two_factor(&self, c: &Client, email: &str) -> Vec<String> {
        let (status, body) = self.call(c, "two_factor/begin", &[]).await;
        assert!(status.is_success(), "{status} {body}");
        let (_, view) = self.call(c, "two_factor", &[]).await;
        assert!(view.contains("otpauth://totp/CloudRouter:"), "{view}");
        // An earlier step's code, so that the test's next code (of the current step) is still new.
        let code = app_code(&self.pool, email, "totp_pending_enc", -1).await;
        let (status, body) = self.call(c, "two_factor/confirm", &[("code", &code)]).await;
        assert!(status.is_success(), "{status} {body}");
        let codes: serde_json::Value = serde_json::from_str(&body).unwrap();
        codes["codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect()
    }

    /// Signs `c` up as `email`, makes the account staff and turns its two-factor sign-in on:
    /// what staff functions ask of a caller.
    pub async fn staff(&self, c: &Client, email: &str) {
        self.signup(c, email).await;
        cloudrouter_core::accounts::ensure_staff(&self.pool, email, PASSWORD).await.unwrap();
        self.enable_two_factor(c, email).await;
    }
}
