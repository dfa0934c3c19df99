pub mod catalogue;
pub mod upstreams;
pub mod users;

use leptos::prelude::*;

/// What a page shows when its data could not be loaded: usually "sign in" or "staff only".
#[component]
pub fn LoadError(error: ServerFnError) -> impl IntoView {
    view! { <p role="alert" class="alert-error mt-6">{crate::api::error_text(&error)}</p> }
}
