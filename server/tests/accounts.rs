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
    // Staff work with two-factor sign-in on.
    app.enable_two_factor(&customer, "ivy@example.com").await;
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

/// The harness's server secret, as the server derives its key from it (to read what it stored).
fn crypto() -> cloudrouter_core::crypto::Crypto {
    cloudrouter_core::crypto::Crypto::from_secret("test-server-secret")
}

/// The code the authenticator app shows now for the account's secret, `steps` steps away.
async fn app_code(pool: &PgPool, email: &str, column: &str, steps: i64) -> String {
    use cloudrouter_core::totp;
    let stored: Vec<u8> = sqlx::query_scalar(&format!("SELECT {column} FROM users WHERE email = $1")).bind(email).fetch_one(pool).await.unwrap();
    let secret = crypto().decrypt(&stored).unwrap();
    totp::code_at(&secret, chrono::Utc::now().timestamp() / totp::STEP_SECS + steps)
}

impl App {
    /// Turns two-factor sign-in on for the signed-in `c` (as a person does in Settings); the recovery codes.
    async fn enable_two_factor(&self, c: &Client, email: &str) -> Vec<String> {
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
}

#[sqlx::test(migrations = false)]
async fn the_password_alone_does_not_sign_in_an_account_with_two_factor(pool: PgPool) {
    let app = start(pool).await;
    let owner = client();
    app.signup(&owner, "twofa@example.com").await;
    app.enable_two_factor(&owner, "twofa@example.com").await;

    let thief = client();
    let (status, _) = app.login(&thief, "twofa@example.com", PASSWORD).await;
    assert!(status.is_success());
    assert_eq!(app.me(&thief).await, "null", "not signed in after the password step");
    let (status, _) = app.call(&thief, "keys", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let page = thief.get(format!("{}/console", app.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER, "console pages wait for the code");

    let code = app_code(&app.pool, "twofa@example.com", "totp_secret_enc", 0).await;
    let (status, body) = app.call(&thief, "login_code", &[("code", &code)]).await;
    assert!(status.is_success(), "{status} {body}");
    assert!(app.me(&thief).await.contains("twofa@example.com"), "signed in with the code");

    // The same code again, from another sign-in: refused (a code is used once).
    let again = client();
    app.login(&again, "twofa@example.com", PASSWORD).await;
    let (status, body) = app.call(&again, "login_code", &[("code", &code)]).await;
    assert!(!status.is_success() && body.contains("That code is not right"), "{status} {body}");
    assert_eq!(app.me(&again).await, "null");
}

#[sqlx::test(migrations = false)]
async fn code_guessing_is_throttled_and_recovery_codes_work_once(pool: PgPool) {
    let app = start(pool).await;
    let owner = client();
    app.signup(&owner, "guess@example.com").await;
    let recovery = app.enable_two_factor(&owner, "guess@example.com").await;
    assert_eq!(recovery.len(), 10);

    let guesser = client_from("127.0.0.2");
    app.login(&guesser, "guess@example.com", PASSWORD).await;
    for i in 0..5 {
        let (status, body) = app.call(&guesser, "login_code", &[("code", &format!("{:06}", 100_000 + i))]).await;
        assert!(!status.is_success() && body.contains("That code is not right"), "wrong code {i}: {status} {body}");
    }
    let right = app_code(&app.pool, "guess@example.com", "totp_secret_enc", 0).await;
    let (status, body) = app.call(&guesser, "login_code", &[("code", &right)]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "held back even with the right code: {body}");

    // The owner elsewhere signs in with a recovery code, typed loosely; it works once.
    let owner_b = client_from("127.0.0.3");
    app.login(&owner_b, "guess@example.com", PASSWORD).await;
    let typed = recovery[0].to_uppercase().replace('-', " ");
    let (status, body) = app.call(&owner_b, "login_code", &[("code", &typed)]).await;
    assert!(status.is_success(), "{status} {body}");
    let owner_c = client_from("127.0.0.3");
    app.login(&owner_c, "guess@example.com", PASSWORD).await;
    let (status, _) = app.call(&owner_c, "login_code", &[("code", &recovery[0])]).await;
    assert!(!status.is_success(), "a recovery code is used once");
}

#[sqlx::test(migrations = false)]
async fn staff_without_two_factor_reach_no_staff_function_or_page(pool: PgPool) {
    let app = start(pool).await;
    let staff = client();
    app.signup(&staff, "ops2fa@example.com").await;
    accounts::ensure_staff(&app.pool, "ops2fa@example.com", PASSWORD).await.unwrap();
    let (status, body) = app.call(&staff, "admin/users", &[("query", "")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("two-factor"), "{body}");
    let page = staff.get(format!("{}/console/admin/upstreams", app.base)).send().await.unwrap();
    assert_eq!((page.status(), page.headers().get("location").and_then(|v| v.to_str().ok())), (StatusCode::SEE_OTHER, Some("/console/settings")), "sent to set it up");

    app.enable_two_factor(&staff, "ops2fa@example.com").await;
    let (status, body) = app.call(&staff, "admin/users", &[("query", "")]).await;
    assert!(status.is_success(), "{status} {body}");
}

#[sqlx::test(migrations = false)]
async fn two_factor_secrets_are_encrypted_and_recovery_codes_hashed_at_rest(pool: PgPool) {
    let app = start(pool).await;
    let c = client();
    app.signup(&c, "atrest@example.com").await;
    let recovery = app.enable_two_factor(&c, "atrest@example.com").await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT totp_secret_enc FROM users").fetch_one(&app.pool).await.unwrap();
    let secret = crypto().decrypt(&stored).unwrap();
    let text = cloudrouter_core::totp::secret_text(&secret);
    let dump: Vec<String> = sqlx::query_scalar("SELECT concat_ws('|', u::text, (SELECT string_agg(r::text, ',') FROM recovery_codes r)) FROM users u")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for row in dump {
        assert!(!row.contains(&text) && !row.contains(&secret.iter().map(|b| format!("{b:02x}")).collect::<String>()), "the secret in clear: {row}");
        assert!(recovery.iter().all(|code| !row.contains(code.as_str()) && !row.contains(&code.replace('-', ""))), "a recovery code in clear");
    }

    // Off again only with the password and a code.
    let code = app_code(&app.pool, "atrest@example.com", "totp_secret_enc", 0).await;
    let (status, _) = app.call(&c, "two_factor/disable", &[("password", "Not-the-password-1"), ("code", &code)]).await;
    assert!(!status.is_success());
    let (status, _) = app.call(&c, "two_factor/disable", &[("password", PASSWORD), ("code", "000000")]).await;
    assert!(!status.is_success());
    let code = app_code(&app.pool, "atrest@example.com", "totp_secret_enc", 1).await;
    let (status, body) = app.call(&c, "two_factor/disable", &[("password", PASSWORD), ("code", &code)]).await;
    assert!(status.is_success(), "{status} {body}");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM recovery_codes").fetch_one(&app.pool).await.unwrap();
    assert_eq!(left, 0);
}

#[sqlx::test(migrations = false)]
async fn guessing_the_current_password_in_a_stolen_session_is_throttled(pool: PgPool) {
    let app = start(pool).await;
    let thief = client();
    app.signup(&thief, "stolen@example.com").await;
    let change = |current: &'static str| {
        let (app, thief) = (&app, &thief);
        async move { app.call(thief, "change_password", &[("current", current), ("new", "Taken-over-2027"), ("confirm", "Taken-over-2027")]).await }
    };
    for _ in 0..5 {
        let (status, body) = change("Wrong-guess-00").await;
        assert!(!status.is_success() && body.contains("current password is not right"), "{status} {body}");
    }
    let (status, body) = change(PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "held back even with the right password: {body}");
}
