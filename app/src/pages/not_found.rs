use crate::i18n::t;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    crate::ssr::set_status(http::StatusCode::NOT_FOUND);
    view! {
        <Title text=t("Page not found") />
        <div class="mx-auto max-w-md px-4 py-24 text-center">
            <p class="text-sm font-semibold text-indigo-600 dark:text-indigo-400">"404"</p>
            <h1 class="mt-2 text-3xl font-semibold tracking-tight">{t("Page not found")}</h1>
            <p class="mt-3 text-slate-600 dark:text-slate-400">{t("The page you asked for does not exist or has moved.")}</p>
            <div class="mt-8 flex justify-center gap-3">
                <a href="/" class="btn-ghost">{t("Home")}</a>
                <a href="/console" class="btn-primary">{t("Console")}</a>
            </div>
        </div>
    }
}
