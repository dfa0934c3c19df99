//! The one way pages show server data: a loading line, then the data or a readable error.

use crate::i18n::t;
use leptos::prelude::*;
use leptos::server::codee::string::JsonSerdeCodec;
use serde::{de::DeserializeOwned, Serialize};

/// What a page shows when its data could not be loaded: usually "sign in" or "staff only".
#[component]
pub fn LoadError(error: ServerFnError) -> impl IntoView {
    view! { <p role="alert" class="alert-error mt-6">{crate::api::error_text(&error)}</p> }
}

/// Renders `children` with the resource's data once it is there. Use as
/// `<Loaded resource=r let:data> … </Loaded>`.
#[component]
pub fn Loaded<T, F, V>(resource: Resource<Result<T, ServerFnError>, JsonSerdeCodec>, children: F) -> impl IntoView
where
    T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
    F: Fn(T) -> V + Clone + Send + Sync + 'static,
    V: IntoView + 'static,
{
    view! {
        <Suspense fallback=|| view! { <p class="mt-6 text-slate-500">{t("Loading…")}</p> }>
            {move || {
                let children = children.clone();
                Suspend::new(async move {
                    match resource.await {
                        Ok(data) => children(data).into_any(),
                        Err(error) => view! { <LoadError error /> }.into_any(),
                    }
                })
            }}
        </Suspense>
    }
}
