//! Sign-up (confirmed by a mailed link), sign-in (with its two-factor code step), sign-out,
//! password changes and resets, and two-factor setup.

#[allow(unused_imports)]
use crate::i18n::t;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionUser {
    pub id: String,
    pub email: String,
    pub is_staff: bool,
    /// The zone every time in the console is shown in, as labelled ("Asia/Shanghai (UTC+08:00)").
    pub time_zone: String,
}

#[cfg(feature = "ssr")]
impl From<cloudrouter_core::accounts::User> for SessionUser {
    fn from(u: cloudrouter_core::accounts::User) -> Self {
        let time_zone = crate::ssr::zone_label(crate::ssr::zone_for(&u));
        SessionUser { id: u.id.to_string(), email: u.email, is_staff: u.role == cloudrouter_core::accounts::Role::Staff, time_zone }
    }
}

#[server(endpoint = "me")]
pub async fn me() -> Result<Option<SessionUser>, ServerFnError> {
    Ok(crate::ssr::current_user().await?.map(SessionUser::from))
}

/// Where the browser goes after sign-in or a language switch: `next` if it is a path on this
/// site, else `fallback`. Browsers drop tabs and newlines inside a URL and read `\` as `/`, and a
/// proxy may decode percent escapes once more, so `next` is judged as written and after every
/// round of decoding: printable ASCII without `\`, starting with one `/` (two would name another
/// host). Malformed escapes, other characters and very long values fall back.
pub fn safe_next(next: Option<&str>, fallback: &str) -> String {
    fn local(path: &[u8]) -> bool {
        path.first() == Some(&b'/') && path.get(1) != Some(&b'/') && path.iter().all(|b| (0x21..=0x7e).contains(b) && *b != b'\\')
    }
    /// One round of percent-decoding; None for a malformed escape.
    fn decode(s: &[u8]) -> Option<Vec<u8>> {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            if s[i] == b'%' {
                let (hi, lo) = (hex(*s.get(i + 1)?)?, hex(*s.get(i + 2)?)?);
                out.push(hi << 4 | lo);
                i += 3;
            } else {
                out.push(s[i]);
                i += 1;
            }
        }
        Some(out)
    }
    let Some(next) = next.filter(|n| n.len() <= 2048) else { return fallback.to_string() };
    let mut current = next.as_bytes().to_vec();
    // each round that changes something shortens the value, so this ends
    loop {
        if !local(&current) {
            return fallback.to_string();
        }
        match decode(&current) {
            Some(decoded) if decoded == current => return next.to_string(),
            Some(decoded) => current = decoded,
            None => return fallback.to_string(),
        }
    }
}

/// Where sign-up and reset requests land: the same page whatever the address was.
pub const SIGN_UP_SENT: &str = "/signup/sent";
pub const RESET_SENT: &str = "/password/sent";

/// A sign-up request. The account is created when the link mailed to the address is opened; the
/// answer is the same whether or not the address already has an account (see core
/// `email_links`).
#[server(endpoint = "signup")]
pub async fn signup(email: String, password: String, confirm: String) -> Result<(), ServerFnError> {
    use cloudrouter_core::email_links::{self, SignUpMail};
    if password != confirm {
        return Err(ServerFnError::new(t("The two passwords do not match.")));
    }
    let state = crate::ssr::state()?;
    let lang = crate::i18n::lang();
    let asked = email_links::request_sign_up(&state.pool, &state.hash_slots, &email, &password, lang.code(), crate::ssr::client_addr()?)
        .await
        .map_err(account_error)?;
    if let Some(send) = asked {
        let mail = match send.mail {
            SignUpMail::Confirm { token } => super::mails::confirm_sign_up(&state.public_base_url, send.email, &token),
            SignUpMail::AlreadyRegistered => super::mails::already_registered(&state.public_base_url, send.email),
        };
        state.outbox.queue(&state.pool, &mail).await.map_err(crate::ssr::internal)?;
    }
    leptos_axum::redirect(SIGN_UP_SENT);
    Ok(())
}

/// Opens a sign-up link: the account is created and signed in.
#[server(endpoint = "confirm_signup")]
pub async fn confirm_signup(token: String) -> Result<(), ServerFnError> {
    let state = crate::ssr::state()?;
    let user = cloudrouter_core::email_links::confirm_sign_up(&state.pool, &token).await.map_err(account_error)?;
    crate::ssr::sign_in(&user).await?;
    leptos_axum::redirect("/console");
    Ok(())
}

/// A password-reset request: the same answer whether or not the address has an account.
#[server(endpoint = "forgot_password")]
pub async fn forgot_password(email: String) -> Result<(), ServerFnError> {
    let state = crate::ssr::state()?;
    let asked = cloudrouter_core::email_links::request_password_reset(&state.pool, &email, crate::ssr::client_addr()?).await.map_err(account_error)?;
    if let Some(send) = asked {
        let mail = super::mails::reset_password(&state.public_base_url, send.email, &send.mail);
        state.outbox.queue(&state.pool, &mail).await.map_err(crate::ssr::internal)?;
    }
    leptos_axum::redirect(RESET_SENT);
    Ok(())
}

/// Opens a reset link: sets the new password and ends every session; the user signs in again
/// (with the second factor, if on).
#[server(endpoint = "reset_password")]
pub async fn reset_password(token: String, password: String, confirm: String) -> Result<(), ServerFnError> {
    if password != confirm {
        return Err(ServerFnError::new(t("The two passwords do not match.")));
    }
    let state = crate::ssr::state()?;
    cloudrouter_core::email_links::reset_password(&state.pool, &state.hash_slots, &token, &password).await.map_err(account_error)?;
    crate::ssr::sign_out().await?;
    leptos_axum::redirect("/login?reset=1");
    Ok(())
}

/// Whether a mailed link still works, for its page to say so before asking for anything.
#[server(endpoint = "link_works")]
pub async fn link_works(token: String, reset: bool) -> Result<bool, ServerFnError> {
    let state = crate::ssr::state()?;
    cloudrouter_core::email_links::link_works(&state.pool, &token, reset).await.map_err(crate::ssr::internal)
}

#[server(endpoint = "login")]
pub async fn login(email: String, password: String, next: Option<String>) -> Result<(), ServerFnError> {
    use cloudrouter_core::accounts;
    let state = crate::ssr::state()?;
    let user = accounts::authenticate(&state.pool, &state.hash_slots, &email, &password, crate::ssr::client_addr()?).await.map_err(account_error)?;
    // The language saved on the account follows the user to this browser.
    if let Some(lang) = user.locale.as_deref().and_then(crate::i18n::Lang::parse) {
        set_language_cookie(lang);
    }
    let next = safe_next(next.as_deref(), "/console");
    if user.two_factor {
        // Not signed in yet: the code step finishes it.
        crate::ssr::await_code(&user, next).await?;
        leptos_axum::redirect(CODE_PAGE);
    } else {
        crate::ssr::sign_in(&user).await?;
        leptos_axum::redirect(&next);
    }
    Ok(())
}

/// The sign-in's code step, for accounts with two-factor sign-in on.
pub const CODE_PAGE: &str = "/login/code";

/// The code step: a code from the authenticator app, or a recovery code. Throttled as the
/// password is; a code is accepted once.
#[server(endpoint = "login_code")]
pub async fn login_code(code: String) -> Result<(), ServerFnError> {
    let state = crate::ssr::state()?;
    let Some((user, next)) = crate::ssr::awaiting_code().await? else {
        crate::ssr::set_status(http::StatusCode::UNAUTHORIZED);
        return Err(ServerFnError::new(t("Your sign-in has expired. Please sign in again.")));
    };
    cloudrouter_core::accounts::authenticate_code(&state.pool, &state.crypto, user.id, &code, crate::ssr::client_addr()?)
        .await
        .map_err(account_error)?;
    crate::ssr::sign_in(&user).await?;
    leptos_axum::redirect(&next);
    Ok(())
}

/// An account error in the caller's language (database errors stay generic). Throttling answers
/// 429 and a busy server 503, both with `retry-after`.
#[cfg(feature = "ssr")]
fn account_error(e: cloudrouter_core::accounts::AccountError) -> ServerFnError {
    use cloudrouter_core::accounts::{AccountError, BUSY_RETRY_SECS};
    match e {
        AccountError::Db(e) => crate::ssr::internal(e),
        AccountError::Undecryptable => crate::ssr::internal("a two-factor secret does not decrypt under this server secret"),
        AccountError::Throttled(secs) => {
            retry_after(http::StatusCode::TOO_MANY_REQUESTS, secs.max(1) as u64);
            let minutes = (secs.max(1) + 59) / 60;
            ServerFnError::new(crate::i18n::tf("Too many attempts. Try again in {} minutes.", &[&minutes]))
        }
        AccountError::Busy => {
            retry_after(http::StatusCode::SERVICE_UNAVAILABLE, BUSY_RETRY_SECS);
            ServerFnError::new(t("The server is busy. Please try again in a moment."))
        }
        other => ServerFnError::new(crate::i18n::tr(&other.to_string())),
    }
}

#[cfg(feature = "ssr")]
fn retry_after(status: http::StatusCode, secs: u64) {
    crate::ssr::set_status(status);
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.insert_header(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
}

#[cfg(feature = "ssr")]
fn set_language_cookie(lang: crate::i18n::Lang) {
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        let cookie = format!("{}={}; Path=/; Max-Age=31536000; SameSite=Lax", crate::i18n::COOKIE, lang.code());
        if let Ok(value) = http::HeaderValue::from_str(&cookie) {
            res.append_header(http::header::SET_COOKIE, value);
        }
    }
}

/// Switches the console's language: remembered in a cookie for a year, and on the account when
/// signed in. Posted as a plain form, so it always answers with a redirect back to `back`.
#[server(endpoint = "set_language")]
pub async fn set_language(lang: String, back: Option<String>) -> Result<(), ServerFnError> {
    let lang = crate::i18n::Lang::parse(&lang).unwrap_or_default();
    set_language_cookie(lang);
    if let Some(user) = crate::ssr::current_user().await? {
        cloudrouter_core::accounts::set_locale(&crate::ssr::pool()?, user.id, lang.code()).await.map_err(crate::ssr::internal)?;
    }
    leptos_axum::redirect(&safe_next(back.as_deref(), "/"));
    Ok(())
}

#[server(endpoint = "logout")]
pub async fn logout() -> Result<(), ServerFnError> {
    crate::ssr::sign_out().await?;
    leptos_axum::redirect("/login");
    Ok(())
}

#[server(endpoint = "change_password")]
pub async fn change_password(current: String, new: String, confirm: String) -> Result<String, ServerFnError> {
    use cloudrouter_core::accounts::{self, AccountError};
    let user = crate::ssr::require_user().await?;
    if new != confirm {
        return Err(ServerFnError::new(t("The two new passwords do not match.")));
    }
    let state = crate::ssr::state()?;
    let epoch = accounts::change_password(&state.pool, &state.hash_slots, user.id, &current, &new, crate::ssr::client_addr()?).await.map_err(|e| match e {
        AccountError::WrongCredentials => ServerFnError::new(t("Your current password is not right.")),
        other => account_error(other),
    })?;
    // Every other session is signed out by the new epoch; this one moves to it under a new id.
    crate::ssr::renew(epoch).await?;
    Ok(t("Password changed.").into())
}

/// The two-factor part of Settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwoFactorView {
    pub enabled: bool,
    /// A staff account without it: the admin pages wait for it.
    pub required: bool,
    /// A setup in progress: the secret to put into an authenticator app.
    pub setup: Option<TwoFactorSetup>,
    pub recovery_codes_left: i64,
    /// Recovery codes made by a plain form post (JavaScript off): the answer to that post is this
    /// page rendered with them in context (the server's `web::shown_once_page`); kept nowhere.
    pub just_made: Option<RecoveryCodes>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwoFactorSetup {
    /// Base32, to type in.
    pub secret: String,
    pub uri: String,
    /// The URI as a QR code (SVG), when it could be drawn.
    pub qr_svg: Option<String>,
}

/// The one moment the recovery codes are visible.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryCodes {
    pub codes: Vec<String>,
}

impl std::fmt::Display for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(t("Two-factor sign-in is on."))
    }
}

#[server(endpoint = "two_factor")]
pub async fn two_factor() -> Result<TwoFactorView, ServerFnError> {
    use cloudrouter_core::{accounts::Role, totp};
    let user = crate::ssr::require_user().await?;
    let state = crate::ssr::state()?;
    let status = totp::status(&state.pool, &state.crypto, user.id).await.map_err(account_error)?;
    Ok(TwoFactorView {
        enabled: status.enabled,
        required: user.role == Role::Staff && !status.enabled,
        setup: status.pending.map(|secret| {
            let uri = totp::otpauth_uri(&secret, &user.email);
            TwoFactorSetup { secret: totp::secret_text(&secret), qr_svg: crate::ssr::qr_svg(&uri).ok(), uri }
        }),
        recovery_codes_left: status.recovery_codes_left,
        just_made: use_context::<RecoveryCodes>(),
    })
}

/// Starts the setup with a new secret (shown on the Settings page until confirmed).
#[server(endpoint = "two_factor/begin")]
pub async fn begin_two_factor() -> Result<(), ServerFnError> {
    let user = crate::ssr::require_user().await?;
    let state = crate::ssr::state()?;
    cloudrouter_core::totp::begin(&state.pool, &state.crypto, user.id).await.map_err(account_error)
}

/// Turns two-factor sign-in on with a code of the new secret, and answers the recovery codes.
/// Sessions signed in with the password alone end; this one continues under a new id.
#[server(endpoint = "two_factor/confirm")]
pub async fn confirm_two_factor(code: String) -> Result<RecoveryCodes, ServerFnError> {
    let user = crate::ssr::require_user().await?;
    let state = crate::ssr::state()?;
    let (codes, epoch) = cloudrouter_core::totp::confirm(&state.pool, &state.crypto, user.id, &code, chrono::Utc::now().timestamp())
        .await
        .map_err(account_error)?;
    crate::ssr::renew(epoch).await?;
    Ok(RecoveryCodes { codes })
}

/// Turns two-factor sign-in off, with the password and a code (or a recovery code).
#[server(endpoint = "two_factor/disable")]
pub async fn disable_two_factor(password: String, code: String) -> Result<String, ServerFnError> {
    use cloudrouter_core::{accounts, totp};
    let user = crate::ssr::require_user().await?;
    let state = crate::ssr::state()?;
    // The code first: it is throttled, so the password cannot be guessed here without codes.
    accounts::authenticate_code(&state.pool, &state.crypto, user.id, &code, crate::ssr::client_addr()?).await.map_err(account_error)?;
    if !accounts::check_password(&state.pool, &state.hash_slots, user.id, &password).await.map_err(account_error)? {
        return Err(ServerFnError::new(t("Your current password is not right.")));
    }
    let mut tx = state.pool.begin().await.map_err(crate::ssr::internal)?;
    totp::disable(&mut tx, user.id).await.map_err(account_error)?;
    tx.commit().await.map_err(crate::ssr::internal)?;
    Ok(t("Two-factor sign-in is off.").into())
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_only_allows_local_paths() {
        assert_eq!(safe_next(Some("/console/keys"), "/console"), "/console/keys");
        assert_eq!(safe_next(Some("/console/usage?from=2026-11-01&model=claude-sonnet-4-6"), "/console"), "/console/usage?from=2026-11-01&model=claude-sonnet-4-6");
        assert_eq!(safe_next(Some("/"), "/console"), "/");
        assert_eq!(safe_next(None, "/console"), "/console");
        assert_eq!(safe_next(Some("https://evil.example"), "/"), "/");
    }

    #[test]
    fn open_redirect_to_another_site_is_refused() {
        let hostile = [
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil",
            "\\/evil.example",
            "/%09/evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/%0a/evil.example",
            "/%0D%0A/evil.example",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "/%5Cevil.example",
            "/%5c%5cevil.example",
            "/%252F%252Fevil.example",
            "/%25252F/evil.example",
            "https://evil.example",
            "HTTPS://evil.example/console",
            "http:evil.example",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "evil.example",
            "console",
            "",
            " ",
            " /console",
            "\u{0}/console",
            "/console\u{0}",
            "/console\u{7f}",
            "/ /evil.example",
            "/\u{a0}/evil.example",
            "/\u{3000}/evil.example",
            "/%E3%80%80/evil.example",
            "/%FF%FE",
            "/%C0%AF%C0%AFevil.example",
            "/%",
            "/%2",
            "/%zz",
            "/%%2F",
            "/\u{1F600}",
        ];
        for h in hostile {
            let out = safe_next(Some(h), "/console");
            assert_eq!(out, "/console", "{h:?} was let through");
        }
        let long = format!("/console/{}", "a".repeat(5000));
        assert_eq!(safe_next(Some(&long), "/console"), "/console");
    }
}
