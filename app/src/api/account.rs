//! Sign-up, sign-in, sign-out and password changes.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionUser {
    pub id: String,
    pub email: String,
    pub is_staff: bool,
}

#[cfg(feature = "ssr")]
impl From<cloudrouter_core::accounts::User> for SessionUser {
    fn from(u: cloudrouter_core::accounts::User) -> Self {
        SessionUser { id: u.id.to_string(), email: u.email, is_staff: u.role == cloudrouter_core::accounts::Role::Staff }
    }
}

#[server(endpoint = "me")]
pub async fn me() -> Result<Option<SessionUser>, ServerFnError> {
    Ok(crate::ssr::current_user().await?.map(SessionUser::from))
}

/// Only local paths are accepted as a place to return to, never another site.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/console".to_string(),
    }
}

#[server(endpoint = "signup")]
pub async fn signup(email: String, password: String, confirm: String) -> Result<(), ServerFnError> {
    use cloudrouter_core::accounts::{self, AccountError};
    if password != confirm {
        return Err(ServerFnError::new("The two passwords do not match."));
    }
    let user = accounts::create_user(&crate::ssr::pool()?, &email, &password).await.map_err(|e| match e {
        AccountError::Db(e) => crate::ssr::internal(e),
        other => ServerFnError::new(other.to_string()),
    })?;
    crate::ssr::sign_in(&user).await?;
    leptos_axum::redirect("/console");
    Ok(())
}

#[server(endpoint = "login")]
pub async fn login(email: String, password: String, next: Option<String>) -> Result<(), ServerFnError> {
    use cloudrouter_core::accounts::{self, AccountError};
    let ip = crate::ssr::client_ip();
    let user = accounts::authenticate(&crate::ssr::pool()?, &email, &password, &ip).await.map_err(|e| match e {
        AccountError::Db(e) => crate::ssr::internal(e),
        AccountError::Throttled(_) => {
            crate::ssr::set_status(http::StatusCode::TOO_MANY_REQUESTS);
            ServerFnError::new(e.to_string())
        }
        other => ServerFnError::new(other.to_string()),
    })?;
    crate::ssr::sign_in(&user).await?;
    leptos_axum::redirect(&safe_next(next.as_deref()));
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
        return Err(ServerFnError::new("The two new passwords do not match."));
    }
    accounts::change_password(&crate::ssr::pool()?, user.id, &current, &new).await.map_err(|e| match e {
        AccountError::WrongCredentials => ServerFnError::new("Your current password is not right."),
        AccountError::Db(e) => crate::ssr::internal(e),
        other => ServerFnError::new(other.to_string()),
    })?;
    // Other sessions keep working until they expire; this one gets a new id.
    crate::ssr::session().await?.cycle_id().await.map_err(crate::ssr::internal)?;
    Ok("Password changed.".into())
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_only_allows_local_paths() {
        assert_eq!(safe_next(Some("/console/keys")), "/console/keys");
        assert_eq!(safe_next(Some("//evil.example")), "/console");
        assert_eq!(safe_next(Some("https://evil.example")), "/console");
        assert_eq!(safe_next(Some("/\\evil.example")), "/console");
        assert_eq!(safe_next(None), "/console");
    }
}
