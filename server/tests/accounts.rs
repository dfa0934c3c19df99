//! Accounts through the real HTTP surface: server functions, sessions and guards, against a
//! fresh Postgres database per test.

use cloudrouter_core::accounts;
use reqwest::{redirect::Policy, Client, StatusCode};
use sqlx::PgPool;

mod common;

use common::{app_code, client, crypto, spawn_app, spawn_app_with, TestApp, PASSWORD};

#[sqlx::test(migrations = false)]
async fn signup_signs_in_and_logout_signs_out(pool: PgPool) {
    let app = spawn_app(pool).await;
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
    let app = spawn_app(pool).await;
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
async fn weak_password_and_bad_email_are_refused_before_anything_is_mailed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (status, body) = app.call(&client(), "signup", &[("email", "gus@example.com"), ("password", "short"), ("confirm", "short")]).await;
    assert!(!status.is_success());
    assert!(body.contains("at least 10 characters"), "{body}");
    let (status, body) = app.call(&client(), "signup", &[("email", "not-an-address"), ("password", PASSWORD), ("confirm", PASSWORD)]).await;
    assert!(!status.is_success() && body.contains("valid email"), "{status} {body}");
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM email_links").fetch_one(&app.pool).await.unwrap();
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox").fetch_one(&app.pool).await.unwrap();
    assert_eq!((pending, queued), (0, 0), "nothing half-written");
}

/// The answer to a request as an outsider sees it: status, the redirect and the body.
async fn outsider_view(app: &TestApp, name: &str, form: &[(&str, &str)]) -> (StatusCode, Option<String>, String) {
    let res = app.post(&client(), name, form).await;
    let location = res.headers().get("location").or(res.headers().get("serverfnredirect")).map(|v| v.to_str().unwrap().to_string());
    (res.status(), location, res.text().await.unwrap())
}

#[sqlx::test(migrations = false)]
async fn sign_up_does_not_reveal_which_emails_are_registered(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.signup(&client(), "fay@example.com").await;
    let form = |email: &'static str| [("email", email), ("password", "Another-pass-2026"), ("confirm", "Another-pass-2026")];
    let taken = outsider_view(&app, "signup", &form("Fay@Example.com")).await;
    let free = outsider_view(&app, "signup", &form("nobody-yet@example.com")).await;
    assert!(taken.0.is_success(), "{taken:?}");
    assert_eq!(taken, free, "a registered address answers exactly as a new one");

    // The owner is told, with no link that does anything; the account is untouched.
    let told = app.mail.nth_to("fay@example.com", 2).await;
    assert!(told.text().contains("already has an account"), "{}", told.text());
    assert_eq!(told.token("/signup/confirm"), None);
    let (status, _) = app.login(&client(), "fay@example.com", "Another-pass-2026").await;
    assert!(!status.is_success(), "the second sign-up's password does not sign in");
    let (status, _) = app.login(&client(), "fay@example.com", PASSWORD).await;
    assert!(status.is_success(), "the owner's password still does");
}

#[sqlx::test(migrations = false)]
async fn an_account_exists_only_once_its_mailed_link_is_opened(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (status, _) = app.request_signup(&client(), "gwen@example.com").await;
    assert!(status.is_success());
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&app.pool).await.unwrap();
    assert_eq!(users, 0, "no account before the link is opened");
    let (status, _) = app.login(&client(), "gwen@example.com", PASSWORD).await;
    assert!(!status.is_success(), "an unconfirmed sign-up does not sign in");

    // Someone else asks for the same address first with their own password: whoever reads the
    // mailbox decides, and only the link opened counts.
    app.call(&client(), "signup", &[("email", "gwen@example.com"), ("password", "Squatter-pass-99"), ("confirm", "Squatter-pass-99")]).await;
    let mail = app.mail.nth_to("gwen@example.com", 1).await;
    assert_eq!(mail.header("Subject").as_deref(), Some("Confirm your CloudRouter account"));
    let token = mail.token("/signup/confirm").unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM email_links WHERE token_hash = $1")
        .bind(&token)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "the token itself is not stored");

    let page = client().get(format!("{}/signup/confirm?token={token}", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Finish creating my account"), "opening the link only shows a button");
    let c = client();
    let (status, body) = app.call(&c, "confirm_signup", &[("token", &token)]).await;
    assert!(status.is_success(), "{status} {body}");
    assert!(app.me(&c).await.contains("gwen@example.com"), "the link signs the new account in");
    let verified: bool = sqlx::query_scalar("SELECT email_verified_at IS NOT NULL FROM users WHERE email = 'gwen@example.com'").fetch_one(&app.pool).await.unwrap();
    assert!(verified);

    // The link works once, and the squatter's link died with it.
    let (status, body) = app.call(&client(), "confirm_signup", &[("token", &token)]).await;
    assert!(!status.is_success() && body.contains("expired or was already used"), "{status} {body}");
    let squatter = app.mail.nth_to("gwen@example.com", 2).await.token("/signup/confirm").unwrap();
    let (status, _) = app.call(&client(), "confirm_signup", &[("token", &squatter)]).await;
    assert!(!status.is_success());
    let (status, _) = app.login(&client(), "gwen@example.com", "Squatter-pass-99").await;
    assert!(!status.is_success());
}

#[sqlx::test(migrations = false)]
async fn password_reset_by_mailed_link_ends_every_session_and_works_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let old_session = client();
    app.signup(&old_session, "hana@example.com").await;

    let asked = outsider_view(&app, "forgot_password", &[("email", "HANA@example.com")]).await;
    let unknown = outsider_view(&app, "forgot_password", &[("email", "nobody@example.com")]).await;
    assert!(asked.0.is_success(), "{asked:?}");
    assert_eq!(asked, unknown, "a reset request does not reveal whether the address has an account");

    let mail = app.mail.nth_to("hana@example.com", 2).await;
    assert_eq!(mail.header("Subject").as_deref(), Some("Reset your CloudRouter password"));
    let token = mail.token("/password/reset").expect("a reset link");
    let (status, body) = app.call(&client(), "reset_password", &[("token", &token), ("password", "short"), ("confirm", "short")]).await;
    assert!(!status.is_success() && body.contains("at least 10 characters"), "{body}");
    let (status, body) = app.call(&client(), "reset_password", &[("token", &token), ("password", "Brand-new-pass-7"), ("confirm", "Brand-new-pass-7")]).await;
    assert!(status.is_success(), "{status} {body}");

    assert_eq!(app.me(&old_session).await, "null", "a reset signs every session out");
    assert!(!app.login(&client(), "hana@example.com", PASSWORD).await.0.is_success(), "the old password is gone");
    assert!(app.login(&client(), "hana@example.com", "Brand-new-pass-7").await.0.is_success());
    let (status, body) = app.call(&client(), "reset_password", &[("token", &token), ("password", "Third-pass-777"), ("confirm", "Third-pass-777")]).await;
    assert!(!status.is_success() && body.contains("expired or was already used"), "a link works once: {body}");
    let (status, _) = app.call(&client(), "reset_password", &[("token", "forged-token"), ("password", "Third-pass-777"), ("confirm", "Third-pass-777")]).await;
    assert!(!status.is_success());
}

#[sqlx::test(migrations = false)]
async fn reset_links_expire_and_do_not_skip_two_factor(pool: PgPool) {
    let app = spawn_app(pool).await;
    let owner = client();
    app.signup(&owner, "ines@example.com").await;
    app.enable_two_factor(&owner, "ines@example.com").await;

    app.call(&client(), "forgot_password", &[("email", "ines@example.com")]).await;
    let late = app.mail.nth_to("ines@example.com", 2).await.token("/password/reset").unwrap();
    sqlx::query("UPDATE email_links SET expires_at = now() - interval '1 second'").execute(&app.pool).await.unwrap();
    let (status, body) = app.call(&client(), "reset_password", &[("token", &late), ("password", "Brand-new-pass-7"), ("confirm", "Brand-new-pass-7")]).await;
    assert!(!status.is_success() && body.contains("expired"), "an hour-old link is dead: {body}");

    app.call(&client(), "forgot_password", &[("email", "ines@example.com")]).await;
    let token = app.mail.nth_to("ines@example.com", 3).await.token("/password/reset").unwrap();
    let (status, _) = app.call(&client(), "reset_password", &[("token", &token), ("password", "Brand-new-pass-7"), ("confirm", "Brand-new-pass-7")]).await;
    assert!(status.is_success());
    let c = client();
    app.login(&c, "ines@example.com", "Brand-new-pass-7").await;
    assert_eq!(app.me(&c).await, "null", "the new password still needs the second factor");
}

#[sqlx::test(migrations = false)]
async fn the_mail_forms_cannot_flood_an_inbox(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.signup(&client(), "jo@example.com").await;
    // From many addresses, so the per-address throttles do not step in first.
    for i in 0..12 {
        let c = client_from(&format!("127.0.9.{}", i + 1));
        let form: &[(&str, &str)] = if i % 2 == 0 { &[("email", "jo@example.com")] } else { &[("email", "jo@example.com"), ("password", PASSWORD), ("confirm", PASSWORD)] };
        let (status, _) = app.call(&c, if i % 2 == 0 { "forgot_password" } else { "signup" }, form).await;
        assert!(status.is_success(), "the answer stays the same");
    }
    app.mail_sent().await;
    assert_eq!(app.mail.to("jo@example.com").len(), 5, "five mails to one address an hour, whoever asks");
}

#[sqlx::test(migrations = false)]
async fn repeated_failures_lock_the_account_for_a_while(pool: PgPool) {
    let app = spawn_app(pool).await;
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
    let app = spawn_app(pool).await;
    let customer = client();
    app.signup(&customer, "ivy@example.com").await;
    let (status, body) = app.call(&customer, "admin/users", &[("query", ""), ("sort", ""), ("dir", "")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("staff only"), "{body}");
    // the attack: mint balance by generating redeem codes, or void other customers' codes
    let mint = [("kind", "balance"), ("count", "5"), ("amount", "1000"), ("days", ""), ("plan", ""), ("months", ""), ("expires", ""), ("note", "")];
    for (endpoint, args) in [
        ("admin/redeem/generate", &mint[..]),
        ("admin/redeem/batches", &[][..]),
        ("admin/redeem/codes", &[("batch", "00000000-0000-0000-0000-000000000000")][..]),
        ("admin/redeem/void", &[("batch", "00000000-0000-0000-0000-000000000000"), ("code", "")][..]),
    ] {
        let (status, body) = app.call(&customer, endpoint, args).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{endpoint}: {body}");
    }
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM redeem_batches").fetch_one(&app.pool).await.unwrap();
    assert_eq!(batches, 0, "no codes were made");

    let anonymous = client();
    let (status, _) = app.call(&anonymous, "admin/users", &[("query", ""), ("sort", ""), ("dir", "")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // `server admin create` is idempotent: it promotes an existing account.
    accounts::ensure_staff(&app.pool, "ivy@example.com", PASSWORD).await.unwrap();
    accounts::ensure_staff(&app.pool, "ivy@example.com", PASSWORD).await.unwrap();
    // Staff work with two-factor sign-in on.
    app.enable_two_factor(&customer, "ivy@example.com").await;
    let (status, body) = app.call(&customer, "admin/users", &[("query", "ivy"), ("sort", ""), ("dir", "")]).await;
    assert!(status.is_success(), "{status} {body}");
    assert!(body.contains("ivy@example.com"));
}

#[sqlx::test(migrations = false)]
async fn console_pages_redirect_to_sign_in_and_cross_site_posts_are_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
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
    cloudrouter_core::db::migrate(&pool).await.unwrap();
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
    let app = spawn_app(pool).await;
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
    let app = spawn_app(pool).await;
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
    let app = spawn_app(pool).await;
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
    let app = spawn_app(pool).await;
    let c = client();
    let mut last = (StatusCode::OK, String::new());
    for i in 0..25 {
        last = app.request_signup(&c, &format!("flood{i}@example.com")).await;
    }
    assert_eq!(last.0, StatusCode::TOO_MANY_REQUESTS, "{}", last.1);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM email_links").fetch_one(&app.pool).await.unwrap();
    assert!(count <= 20, "{count} sign-ups from one address in a minute");
}

#[sqlx::test(migrations = false)]
async fn hashing_flood_waits_for_a_slot_or_gets_503_instead_of_exhausting_memory(pool: PgPool) {
    let app = spawn_app_with(pool, |c| c.hash_slots = 1).await;
    // Each sign-in of a distinct (unknown) email costs one argon2 check (19 MiB). 400 of them take
    // well over the 2 s a request may wait for the one slot (200 were about 2 s here: flaky).
    let attempts = (0..400).map(|i| {
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
    let app = spawn_app_with(pool, |c| c.trusted_proxies = "127.0.0.1, 10.0.0.0/8".into()).await;
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
    let app = spawn_app(pool).await;
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

#[sqlx::test(migrations = false)]
async fn the_password_alone_does_not_sign_in_an_account_with_two_factor(pool: PgPool) {
    let app = spawn_app(pool).await;
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
    let app = spawn_app(pool).await;
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
    let app = spawn_app(pool).await;
    let staff = client();
    app.signup(&staff, "ops2fa@example.com").await;
    accounts::ensure_staff(&app.pool, "ops2fa@example.com", PASSWORD).await.unwrap();
    let (status, body) = app.call(&staff, "admin/users", &[("query", ""), ("sort", ""), ("dir", "")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("two-factor"), "{body}");
    let page = staff.get(format!("{}/console/admin/upstreams", app.base)).send().await.unwrap();
    assert_eq!((page.status(), page.headers().get("location").and_then(|v| v.to_str().ok())), (StatusCode::SEE_OTHER, Some("/console/settings")), "sent to set it up");

    app.enable_two_factor(&staff, "ops2fa@example.com").await;
    let (status, body) = app.call(&staff, "admin/users", &[("query", ""), ("sort", ""), ("dir", "")]).await;
    assert!(status.is_success(), "{status} {body}");
}

#[sqlx::test(migrations = false)]
async fn two_factor_secrets_are_encrypted_and_recovery_codes_hashed_at_rest(pool: PgPool) {
    let app = spawn_app(pool).await;
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
    let app = spawn_app(pool).await;
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

/// Signing in (and switching language) sends the browser on only to a path of this site: an
/// attacker's `next` or `back` link falls back to the console home.
#[sqlx::test(migrations = false)]
async fn sign_in_next_cannot_send_the_browser_to_another_site(pool: PgPool) {
    let app = spawn_app(pool).await;
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

/// Hostile values for every field at once: dates beyond what chrono and Postgres hold, ids that
/// are not UUIDs, amounts that are huge, negative, in exponent form, not numbers or too precise,
/// bytes that are not UTF-8 once decoded, and very long text.
fn hostile_values() -> Vec<String> {
    let mut v: Vec<String> = [
        "", " ", "-262143-01-01", "-262144-01-01", "+262143-12-31", "+275760-09-13", "0000-01-01", "9999-12-31", "2026-02-30",
        "not-a-uuid", "00000000-0000-0000-0000-000000000000", "1e9", "NaN", "inf", "-1", "-0", "0",
        "99999999999999999999999999", "-9223372036854.775808", "9223372036854775807", "0.0000001", "1.1234567", "maybe", "true",
        "%FF%FE", "\u{0}", "<script>alert(1)</script>",
        // a forged cursor naming a moment chrono holds and Postgres does not
        "LTgwMDAwMDAwMDAwMDAwMDAwMDA6eA", "../../etc/passwd", "//evil.example",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    v.push("x".repeat(20_000));
    v
}

/// Every field name the server functions take (nested `q[...]` for the usage log's filter).
const FIELDS: &[&str] = &[
    "on", "window_5h_usd", "weekly_usd", "tpm_limit", "ip_allow", "clients",
    "account", "address", "allow_fallback", "allowance_usd", "amount", "api_key", "approve", "back", "bank", "base_url", "by", "cache_read",
    "cache_write_1h", "cache_write_5m", "capacity", "channel", "channels", "code", "company", "concurrency_cap", "concurrency_limit", "confirm",
    "contact_name", "current", "days", "description", "email", "enabled", "everyone", "expires_in_days", "id", "idempotency_key", "impact",
    "input", "issued_on", "kind", "lang", "message", "message_en", "message_zh", "method", "models", "monthly_spend", "name", "new", "next", "note",
    "number", "order_id", "output", "password", "phone", "plan", "price_yuan", "priority", "query", "range", "rate", "reason", "rpm_limit",
    "spend_limit", "status", "suspend", "tax_id", "title_en", "title_zh", "token", "weight", "q[key]", "q[model]", "q[status]", "q[from]", "q[to]",
    "q[cursor]",
];

fn enc(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Every server function and console route, called by a signed-in staff member and by a stranger
/// with hostile values: a 4xx or a page, never a 5xx or a dropped connection (a panic).
#[sqlx::test(migrations = false)]
async fn hostile_input_never_panics_or_answers_5xx(pool: PgPool) {
    let app = spawn_app(pool).await;
    let staff = client();
    app.signup(&staff, "root@example.com").await;
    accounts::ensure_staff(&app.pool, "root@example.com", PASSWORD).await.unwrap();
    app.enable_two_factor(&staff, "root@example.com").await;
    let mut paths: Vec<&str> = leptos::server_fn::axum::server_fn_paths().map(|(p, _)| p).filter(|p| *p != "/api/logout").collect();
    paths.sort();
    assert!(paths.len() > 40, "the server functions are all registered: {paths:?}");
    let mut failures = vec![];
    for who in [&staff, &client()] {
        for path in &paths {
            for value in hostile_values() {
                let form = FIELDS.iter().map(|f| format!("{}={}", enc(f), enc(&value))).collect::<Vec<_>>().join("&");
                for accept in ["application/json", "text/html"] {
                    let req = who
                        .post(format!("{}{path}", app.base))
                        .header("accept", accept)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(form.clone());
                    failures.extend(answered(req, &format!("{path} {value:.40?} ({accept})"), &app.pool).await);
                }
            }
            // a body that is not UTF-8 once decoded, and one that is not a form at all
            for body in ["id=%FF%FE&amount=%C0%AF&q[from]=%80", "\u{0}\u{1}{not a form"] {
                let req = who.post(format!("{}{path}", app.base)).header("content-type", "application/x-www-form-urlencoded").body(body);
                failures.extend(answered(req, &format!("{path} raw {body:?}"), &app.pool).await);
            }
        }
        let pages = [
            "/", "/login", "/signup", "/signup/sent", "/signup/confirm", "/password/forgot", "/password/sent", "/password/reset", "/console", "/console/quickstart", "/console/keys", "/console/usage", "/console/billing", "/console/plans",
            "/console/pay/{v}", "/console/invoices", "/console/settings", "/console/admin", "/console/admin/users/{v}", "/console/admin/upstreams",
            "/console/admin/catalogue", "/console/admin/billing", "/console/admin/operations", "/console/admin/incidents", "/console/admin/plans", "/console/admin/audit",
            "/status", "/status.json",
            "/console/usage.csv", "/console/invoices/{v}/pdf",
        ];
        for page in pages {
            for value in hostile_values().into_iter().filter(|v| v.len() < 1000) {
                let q = ["next", "from", "to", "key", "model", "status", "cursor", "range", "by", "id", "token"].iter().map(|k| format!("{k}={}", enc(&value))).collect::<Vec<_>>().join("&");
                let url = format!("{}{}?{q}", app.base, page.replace("{v}", &enc(&value)));
                failures.extend(answered(who.get(&url), &format!("GET {page} {value:.40?}"), &app.pool).await);
            }
        }
    }
    // the CSV export refuses impossible dates with 400, like the page
    for (k, v) in [("from", "-262143-01-01"), ("to", "+262143-12-31"), ("from", "-262144-01-01"), ("to", "+275760-09-13")] {
        match staff.get(format!("{}/console/usage.csv?{k}={}", app.base, enc(v))).send().await {
            Ok(r) if r.status() == StatusCode::BAD_REQUEST => {}
            Ok(r) => failures.push(format!("usage.csv {k}={v}: {}", r.status())),
            Err(e) => failures.push(format!("usage.csv {k}={v}: connection dropped: {e}")),
        }
    }
    // a validation error is the caller's mistake: 400, not 500
    let (status, body) = app.call(&staff, "admin/user/adjust", &[("id", "00000000-0000-0000-0000-000000000000"), ("amount", "NaN"), ("description", ""), ("note", "n"), ("idempotency_key", "k-123456789")]).await;
    if status != StatusCode::BAD_REQUEST || !body.contains("Enter an amount") {
        failures.push(format!("adjust NaN: {status} {body}"));
    }
    // a console body above the limit is refused before it is read
    let big = format!("query={}", "a".repeat(2 << 20));
    let r = staff.post(format!("{}/api/admin/users", app.base)).header("content-type", "application/x-www-form-urlencoded").body(big).send().await.unwrap();
    if r.status() != StatusCode::PAYLOAD_TOO_LARGE {
        failures.push(format!("2 MiB form: {}", r.status()));
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// The crawl's failure for one request, if any: a 5xx (with the start of its body), a dropped
/// connection, or no answer in 60 s (named, with what the database was doing, not a hung test).
async fn answered(req: reqwest::RequestBuilder, what: &str, pool: &PgPool) -> Option<String> {
    match tokio::time::timeout(std::time::Duration::from_secs(60), req.send()).await {
        Ok(Ok(r)) if r.status().is_server_error() => Some(format!("{what}: {} {:.200}", r.status(), r.text().await.unwrap_or_default())),
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("{what}: connection dropped: {e}")),
        Err(_) => Some(format!("{what}: no answer in 60 s; {}", db_snapshot(pool).await)),
    }
}

/// What the test database's other connections are doing, for a request that was never answered
/// (an intermittent hang of the staff Operations page was seen twice in CI and could not be
/// reproduced: this tells a lock or transaction wait from a wait outside the database).
async fn db_snapshot(pool: &PgPool) -> String {
    let q = sqlx::query_as::<_, (Option<String>, Option<String>, Option<String>, Option<f64>, Option<String>)>(
        "SELECT state, wait_event_type, wait_event, extract(epoch FROM now() - query_start)::float8, left(query, 120) \
           FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(pool);
    match tokio::time::timeout(std::time::Duration::from_secs(10), q).await {
        Ok(Ok(rows)) => format!("the database's other connections (state, wait, seconds, query): {rows:?}"),
        Ok(Err(e)) => format!("pg_stat_activity unreadable: {e}"),
        Err(_) => "no connection from the test's pool within 10 s (the pool is exhausted)".into(),
    }
}

/// Every table a staff action may change, as text, to compare before and after.
async fn staff_state(pool: &PgPool) -> Vec<String> {
    let mut out = vec![];
    for table in ["users", "upstreams", "channels", "models", "plans", "api_keys", "audit_log"] {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT x::text FROM {table} x ORDER BY x::text")).fetch_all(pool).await.unwrap();
        out.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
    }
    out
}

/// A staff action and its audit row commit together: when the audit row cannot be written, the
/// action does not happen either; when it can, it names the staff member.
#[sqlx::test(migrations = false)]
async fn staff_action_without_its_audit_row_does_not_happen(pool: PgPool) {
    let app = spawn_app(pool).await;
    let staff = client();
    app.signup(&staff, "boss@example.com").await;
    accounts::ensure_staff(&app.pool, "boss@example.com", PASSWORD).await.unwrap();
    app.enable_two_factor(&staff, "boss@example.com").await;
    let boss: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'boss@example.com'").fetch_one(&app.pool).await.unwrap();
    app.signup(&client(), "cat@example.com").await;
    let cat: String = sqlx::query_scalar("SELECT id::text FROM users WHERE email = 'cat@example.com'").fetch_one(&app.pool).await.unwrap();
    let demo: String = sqlx::query_scalar("SELECT id::text FROM upstreams WHERE is_demo").fetch_one(&app.pool).await.unwrap();
    let actions: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("admin/user/suspend", vec![("id", &cat), ("suspend", "true")]),
        ("admin/upstreams/enable", vec![("id", &demo), ("enabled", "false")]),
        ("admin/upstreams/update", vec![("id", &demo), ("channels", "value"), ("priority", "3"), ("weight", "2"), ("concurrency_cap", ""), ("api_key", "sk-new")]),
        ("admin/upstreams/add", vec![("name", "real"), ("base_url", "https://api.anthropic.com"), ("api_key", "sk-ant-x"), ("channels", "value"), ("priority", ""), ("weight", ""), ("concurrency_cap", "")]),
        ("admin/channel", vec![("code", "value"), ("rate", "0.7"), ("capacity", "50"), ("affinity_wait_ms", "1000")]),
        ("admin/clear_bindings", vec![("user_id", &cat)]),
        ("admin/model", vec![("id", "claude-sonnet-4-6"), ("input", "9"), ("output", "9"), ("cache_write_5m", "9"), ("cache_write_1h", "9"), ("cache_read", "9"), ("enabled", "on")]),
        ("admin/plans/update", vec![("code", "starter"), ("price_yuan", "1"), ("allowance_usd", "1"), ("channels", "value"), ("rpm_limit", ""), ("concurrency_limit", "")]),
    ];
    sqlx::query("CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit log unavailable'; END $$")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()").execute(&app.pool).await.unwrap();
    let before = staff_state(&app.pool).await;
    for (name, form) in &actions {
        let (status, body) = app.call(&staff, name, form).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{name}: {body}");
        assert_eq!(staff_state(&app.pool).await, before, "{name} happened without its audit row");
    }
    sqlx::query("DROP TRIGGER refuse_audit ON audit_log").execute(&app.pool).await.unwrap();
    for (name, form) in &actions {
        let (status, body) = app.call(&staff, name, form).await;
        assert!(status.is_success(), "{name}: {status} {body}");
    }
    let audited: Vec<(String, uuid::Uuid)> = sqlx::query_as("SELECT action, staff_id FROM audit_log ORDER BY id").fetch_all(&app.pool).await.unwrap();
    let names: Vec<&str> = audited.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(names, ["user.suspend", "upstream.disable", "upstream.update", "upstream.add", "channel.update", "affinity.clear", "model.update", "plan.update"]);
    assert!(audited.iter().all(|(_, s)| *s == boss));
}

/// `server admin token ...` as an operator runs it, against the test's database.
fn admin_cli(pool: &PgPool, args: &[&str]) -> std::process::Output {
    let admin = std::env::var("DATABASE_URL").unwrap();
    let db = pool.connect_options().get_database().unwrap().to_string();
    std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("DATABASE_URL", format!("{}/{db}", &admin[..admin.rfind('/').unwrap()]))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Staff API tokens expire (90 days unless `--days` says otherwise), are listed with their prefix,
/// owner and dates, and can be revoked on the command line or in the console (audited); an
/// expired or revoked token gets 401 in the API's error shape.
#[sqlx::test(migrations = false)]
async fn admin_tokens_expire_and_can_be_listed_and_revoked(pool: PgPool) {
    let app = spawn_app(pool).await;
    let staff = client();
    app.signup(&staff, "ops@example.com").await;
    accounts::ensure_staff(&app.pool, "ops@example.com", PASSWORD).await.unwrap();
    app.enable_two_factor(&staff, "ops@example.com").await;
    let issue = |days: Option<&str>| {
        let mut args = vec!["admin", "token", "--email", "ops@example.com"];
        args.extend(days.map(|d| ["--days", d]).into_iter().flatten());
        let out = admin_cli(&app.pool, &args);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let default = issue(None);
    let short = issue(Some("1"));
    let revoked = issue(Some("30"));
    assert!(!admin_cli(&app.pool, &["admin", "token", "--email", "ops@example.com", "--days", "0"]).status.success(), "a lifetime of 0 days is refused");
    let lifetime: Vec<f64> = sqlx::query_scalar("SELECT extract(epoch FROM expires_at - created_at)::float8 / 86400 FROM admin_tokens ORDER BY created_at")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(lifetime.iter().map(|d| d.round() as i64).collect::<Vec<_>>(), [90, 1, 30]);
    let http = Client::new();
    let api = |token: &str| http.get(format!("{}/api/admin/v1/upstreams", app.base)).bearer_auth(token.to_string()).send();
    assert_eq!(api(&default).await.unwrap().status(), StatusCode::OK);
    assert_eq!(api(&short).await.unwrap().status(), StatusCode::OK);

    // the day passes for the 1-day token
    sqlx::query("UPDATE admin_tokens SET expires_at = now() - interval '1 second' WHERE prefix = $1").bind(&short[..10]).execute(&app.pool).await.unwrap();
    // revoked on the command line by its prefix
    let out = admin_cli(&app.pool, &["admin", "token", "--revoke", &revoked[..10]]);
    assert!(out.status.success(), "{out:?}");
    for token in [&short, &revoked] {
        let res = api(token).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let v: serde_json::Value = res.json().await.unwrap();
        assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("authentication_error")), "{v}");
        assert!(v["request_id"].is_string());
    }
    let list = admin_cli(&app.pool, &["admin", "token", "--list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success() && [&default, &short, &revoked].iter().all(|t| listed.contains(&t[..10])) && listed.contains("ops@example.com"), "{listed}");
    assert!(!listed.contains(&default[10..]), "never the secret");

    // the console lists them for staff, and revokes one with an audit row
    let (status, body) = app.call(&staff, "admin/tokens", &[]).await;
    assert!(status.is_success() && body.contains(&default[..10]) && body.contains("ops@example.com"), "{status} {body}");
    let id: String = sqlx::query_scalar("SELECT id::text FROM admin_tokens WHERE prefix = $1").bind(&default[..10]).fetch_one(&app.pool).await.unwrap();
    let customer = client();
    app.signup(&customer, "eve@example.com").await;
    assert_eq!(app.call(&customer, "admin/tokens/revoke", &[("id", &id)]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api(&default).await.unwrap().status(), StatusCode::OK, "a customer cannot revoke it");
    let (status, body) = app.call(&staff, "admin/tokens/revoke", &[("id", &id)]).await;
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(api(&default).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let audit: Vec<(String, String)> = sqlx::query_as("SELECT action, target FROM audit_log").fetch_all(&app.pool).await.unwrap();
    assert_eq!(audit, [("admin_token.revoke".to_string(), format!("admin_token:{id}"))]);
}

#[sqlx::test(migrations = false)]
async fn staff_turn_off_a_lost_second_factor_only_with_a_note_audited_and_the_owner_mailed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let staff = client();
    app.signup(&staff, "desk@example.com").await;
    accounts::ensure_staff(&app.pool, "desk@example.com", PASSWORD).await.unwrap();
    app.enable_two_factor(&staff, "desk@example.com").await;
    let owner = client();
    app.signup(&owner, "lost@example.com").await;
    app.enable_two_factor(&owner, "lost@example.com").await;
    let id: String = sqlx::query_scalar("SELECT id::text FROM users WHERE email = 'lost@example.com'").fetch_one(&app.pool).await.unwrap();

    let (status, _) = app.call(&owner, "admin/user/two_factor_off", &[("id", &id), ("note", "me")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "customers cannot");
    let (status, body) = app.call(&staff, "admin/user/two_factor_off", &[("id", &id), ("note", "  ")]).await;
    assert!(!status.is_success() && body.contains("how you checked"), "a note is required: {body}");

    let (status, body) = app.call(&staff, "admin/user/two_factor_off", &[("id", &id), ("note", "video call, ID card matched")]).await;
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(app.me(&owner).await, "null", "the account's sessions end");
    let c = client();
    app.login(&c, "lost@example.com", PASSWORD).await;
    assert!(app.me(&c).await.contains("lost@example.com"), "the password alone signs in now");
    let (action, note): (String, String) = sqlx::query_as("SELECT action, details->>'note' FROM audit_log WHERE target = $1")
        .bind(format!("user:{id}"))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!((action.as_str(), note.as_str()), ("user.two_factor_off", "video call, ID card matched"));
    let notice = app.mail.nth_to("lost@example.com", 2).await;
    assert!(notice.text().contains("turned off two-factor sign-in"), "{}", notice.text());

    let (status, body) = app.call(&staff, "admin/user/two_factor_off", &[("id", &id), ("note", "again")]).await;
    assert!(!status.is_success() && body.contains("already off"), "{body}");
}

#[sqlx::test(migrations = false)]
async fn mail_the_smtp_server_refuses_is_retried_and_shown_to_staff(pool: PgPool) {
    // nothing listens on this port: every delivery fails
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let app = spawn_app_with(pool, |c| c.smtp_url = Some(format!("smtp://{closed}"))).await;
    let staff = client();
    accounts::ensure_staff(&app.pool, "post@example.com", PASSWORD).await.unwrap();
    app.login(&staff, "post@example.com", PASSWORD).await;
    app.enable_two_factor(&staff, "post@example.com").await;
    let (status, _) = app.request_signup(&client(), "unlucky@example.com").await;
    assert!(status.is_success(), "the answer does not wait for the mail server");
    let mut failed = false;
    for _ in 0..100 {
        let errors: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE last_error IS NOT NULL").fetch_one(&app.pool).await.unwrap();
        if errors > 0 {
            failed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(failed, "the delivery was tried");
    let (retry_in, body): (f64, Option<String>) = sqlx::query_as("SELECT extract(epoch FROM next_at - now())::float8, body FROM mail_outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(retry_in > 10.0 && body.is_some(), "kept for a retry later: {retry_in}");
    let (status, health) = app.call(&staff, "admin/mail_health", &[]).await;
    assert!(status.is_success(), "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["waiting"], 1, "{health}");
    let trouble = &health["troubles"][0];
    assert_eq!((trouble["kind"].as_str(), trouble["to"].as_str()), (Some("signup"), Some("unlucky@example.com")), "{health}");
    assert!(!trouble["error"].as_str().unwrap().is_empty());
    let (status, _) = app.call(&client(), "admin/mail_health", &[]).await;
    assert!(!status.is_success(), "staff only");
}
