//! Staff-only server functions. Every one starts with `require_staff`.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserListItem {
    pub id: String,
    pub email: String,
    pub is_staff: bool,
    pub suspended: bool,
    pub created: String,
}

#[cfg(feature = "ssr")]
impl From<cloudrouter_core::accounts::User> for UserListItem {
    fn from(u: cloudrouter_core::accounts::User) -> Self {
        UserListItem {
            id: u.id.to_string(),
            email: u.email,
            is_staff: u.role == cloudrouter_core::accounts::Role::Staff,
            suspended: u.suspended,
            created: u.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        }
    }
}

#[cfg(feature = "ssr")]
fn parse_id(id: &str) -> Result<uuid::Uuid, ServerFnError> {
    uuid::Uuid::parse_str(id).map_err(|_| ServerFnError::new("No such user."))
}

#[server(endpoint = "admin/users")]
pub async fn list_users(query: String) -> Result<Vec<UserListItem>, ServerFnError> {
    crate::ssr::require_staff().await?;
    let users = cloudrouter_core::accounts::search(&crate::ssr::pool()?, &query, 200).await.map_err(crate::ssr::internal)?;
    Ok(users.into_iter().map(UserListItem::from).collect())
}

#[server(endpoint = "admin/user")]
pub async fn get_user(id: String) -> Result<UserListItem, ServerFnError> {
    crate::ssr::require_staff().await?;
    let user = cloudrouter_core::accounts::find_by_id(&crate::ssr::pool()?, parse_id(&id)?).await.map_err(crate::ssr::internal)?;
    user.map(UserListItem::from).ok_or_else(|| ServerFnError::new("No such user."))
}

#[server(endpoint = "admin/user/suspend")]
pub async fn set_suspended(id: String, suspend: bool) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let id = parse_id(&id)?;
    if id == staff.id {
        return Err(ServerFnError::new("You cannot suspend your own account."));
    }
    let changed = cloudrouter_core::accounts::set_suspended(&crate::ssr::pool()?, id, suspend).await.map_err(crate::ssr::internal)?;
    if !changed {
        return Err(ServerFnError::new("No such user."));
    }
    Ok(if suspend { "Account suspended." } else { "Account reinstated." }.into())
}
