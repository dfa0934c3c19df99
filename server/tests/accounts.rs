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
    start_with(pool, |_| {}).await
}

/// The app with its settings changed by `adjust`.
async fn start_with(pool: PgPool, adjust: impl FnOnce(&mut Config)) -> App {
    db::migrate(&pool).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The harness's fixed secret: the server refuses to run without one.
    let mut config = Config { secret: "test-server-secret".into(), ..Config::from_env(addr) };
    adjust(&mut config);
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
    assert!(body.contains("Too many attempts"), "{body}");
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
async fn spent_throttles_are_forgotten_and_waits_double(pool: PgPool) {
    use cloudrouter_core::throttle;
    db::migrate(&pool).await.unwrap();
    for _ in 0..5 {
        assert_eq!(throttle::take_all(&pool, &[("pair:t", throttle::SIGN_IN_PAIR)]).await.unwrap(), None);
    }
    let first = throttle::take_all(&pool, &[("pair:t", throttle::SIGN_IN_PAIR)]).await.unwrap().expect("waits after five");
    assert!((55..=60).contains(&first), "{first}");
    // The wait is over: one more try, then twice as long.
    sqlx::query("UPDATE auth_throttle SET next_at = now()").execute(&pool).await.unwrap();
    assert_eq!(throttle::take_all(&pool, &[("pair:t", throttle::SIGN_IN_PAIR)]).await.unwrap(), None);
    let second = throttle::take_all(&pool, &[("pair:t", throttle::SIGN_IN_PAIR)]).await.unwrap().expect("waits again");
    assert!((115..=120).contains(&second), "{second}");
    // A refusal by a later key counts nothing on the earlier ones.
    let before: i32 = sqlx::query_scalar("SELECT attempts FROM auth_throttle WHERE key = 'pair:t'").fetch_one(&pool).await.unwrap();
    assert!(throttle::take_all(&pool, &[("addr:t", throttle::SIGN_IN_ADDRESS), ("pair:t", throttle::SIGN_IN_PAIR)]).await.unwrap().is_some());
    let addr: Option<i32> = sqlx::query_scalar("SELECT attempts FROM auth_throttle WHERE key = 'addr:t'").fetch_optional(&pool).await.unwrap();
    assert_eq!((addr, before), (None, 6));

    sqlx::query("INSERT INTO auth_throttle (key, attempts, window_start, next_at) VALUES ('addr:old', 3, now() - interval '2 days', now() - interval '1 day')")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(throttle::prune(&pool).await.unwrap(), 1, "only the spent key goes");
}

/// A client whose connections come from `source` (any 127.x address reaches the test server).
fn client_from(source: &str) -> Client {
    Client::builder().cookie_store(true).redirect(Policy::none()).local_address(source.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
}

#[sqlx::test(migrations = false)]
async fn parallel_burst_of_guesses_is_counted_in_full(pool: PgPool) {
    let app = start(pool).await;
    app.signup(&client(), "burst@example.com").await;
    let guesses = (0..30).map(|i| {
        let app = &app;
        async move { app.login(&client(), "burst@example.com", &format!("Wrong-guess-{i:02}")).await }
    });
    let answers = futures::future::join_all(guesses).await;
    let evaluated = answers.iter().filter(|(_, body)| body.contains("Wrong email or password.")).count();
    let refused = answers.iter().filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((evaluated, refused), (5, 25), "exactly the limit of guesses is checked: {answers:?}");
}

#[sqlx::test(migrations = false)]
async fn guesser_from_one_address_cannot_lock_the_owner_out_from_another(pool: PgPool) {
    let app = start(pool).await;
    app.signup(&client(), "owner@example.com").await;
    let guesser = client_from("127.0.0.2");
    for i in 0..12 {
        app.login(&guesser, "owner@example.com", &format!("Wrong-guess-{i:02}")).await;
    }
    let (status, body) = app.login(&guesser, "owner@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the guesser is held back: {body}");
    let owner = client_from("127.0.0.3");
    let (status, body) = app.login(&owner, "owner@example.com", PASSWORD).await;
    assert!(status.is_success(), "the owner signs in from elsewhere: {status} {body}");
}

#[sqlx::test(migrations = false)]
async fn spoofed_forwarded_for_from_an_untrusted_peer_does_not_dodge_the_throttle(pool: PgPool) {
    let app = start(pool).await;
    app.signup(&client(), "spoof@example.com").await;
    let c = client();
    for i in 0..8 {
        c.post(format!("{}/api/login", app.base))
            .header("accept", "application/json")
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header("x-real-ip", format!("198.51.100.{i}"))
            .form(&[("email", "spoof@example.com"), ("password", "Wrong-guess-00")])
            .send()
            .await
            .unwrap();
    }
    let res = c
        .post(format!("{}/api/login", app.base))
        .header("accept", "application/json")
        .header("x-forwarded-for", "198.51.100.200")
        .form(&[("email", "spoof@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "a header the client wrote is not its address");
}

#[sqlx::test(migrations = false)]
async fn signup_flood_from_one_address_is_throttled(pool: PgPool) {
    let app = start(pool).await;
    let c = client();
    let mut last = (StatusCode::OK, String::new());
    for i in 0..25 {
        last = app.signup(&c, &format!("flood{i}@example.com")).await;
    }
    assert_eq!(last.0, StatusCode::TOO_MANY_REQUESTS, "{}", last.1);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&app.pool).await.unwrap();
    assert!(count <= 20, "{count} accounts from one address in a minute");
}

#[sqlx::test(migrations = false)]
async fn hashing_flood_waits_for_a_slot_or_gets_503_instead_of_exhausting_memory(pool: PgPool) {
    let app = start_with(pool, |c| c.hash_slots = 1).await;
    // Each sign-in of a distinct (unknown) email costs one argon2 check (19 MiB).
    let attempts = (0..200).map(|i| {
        let app = &app;
        async move {
            let res = client_from(&format!("127.0.{}.{}", 1 + i / 10, 10 + i % 10))
                .post(format!("{}/api/login", app.base))
                .header("accept", "application/json")
                .form(&[("email", format!("nobody{i}@example.com").as_str()), ("password", "Wrong-guess-00")])
                .send()
                .await
                .unwrap();
            (res.status(), res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()))
        }
    });
    let answers = futures::future::join_all(attempts).await;
    let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE).collect();
    assert!(!busy.is_empty(), "a burst beyond the bound is turned away: {answers:?}");
    assert!(busy.iter().all(|(_, retry)| retry.is_some()), "with retry-after: {busy:?}");
}

#[sqlx::test(migrations = false)]
async fn forwarded_for_names_the_client_only_behind_a_trusted_proxy(pool: PgPool) {
    let app = start_with(pool, |c| c.trusted_proxies = "127.0.0.1, 10.0.0.0/8".into()).await;
    app.signup(&client(), "proxied@example.com").await;
    let via_proxy = |forwarded: &'static str, password: &'static str| {
        let app = &app;
        async move {
            let res = client()
                .post(format!("{}/api/login", app.base))
                .header("accept", "application/json")
                .header("x-forwarded-for", forwarded)
                .form(&[("email", "proxied@example.com"), ("password", password)])
                .send()
                .await
                .unwrap();
            res.status()
        }
    };
    // The guesser at 198.51.100.7 writes addresses of its own in front; the proxy appends the real one.
    for i in 0..6 {
        let spoofed: &'static str = Box::leak(format!("203.0.113.{i}, 198.51.100.7").into_boxed_str());
        via_proxy(spoofed, "Wrong-guess-00").await;
    }
    assert_eq!(via_proxy("203.0.113.99, 198.51.100.7", PASSWORD).await, StatusCode::TOO_MANY_REQUESTS, "the guesser is held back");
    assert_eq!(via_proxy("198.51.100.8, 10.1.1.1", PASSWORD).await, StatusCode::OK, "the owner, behind two proxies, is not");
}

#[sqlx::test(migrations = false)]
async fn changing_the_password_signs_out_every_other_session(pool: PgPool) {
    let app = start(pool).await;
    let (here, elsewhere) = (client(), client());
    app.signup(&here, "moved@example.com").await;
    app.login(&elsewhere, "moved@example.com", PASSWORD).await;
    assert!(app.me(&elsewhere).await.contains("moved@example.com"));

    let res = here
        .post(format!("{}/api/change_password", app.base))
        .header("accept", "application/json")
        .form(&[("current", PASSWORD), ("new", "Another-pass-2027"), ("confirm", "Another-pass-2027")])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert!(res.headers().get("set-cookie").is_some(), "this session continues under a new id");
    assert!(app.me(&here).await.contains("moved@example.com"), "this session stays signed in");
    assert_eq!(app.me(&elsewhere).await, "null", "the other session is signed out");
    let page = elsewhere.get(format!("{}/console", app.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER, "and a page load goes to sign-in");
}
