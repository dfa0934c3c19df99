use crate::components::layout::{ConsoleLayout, PublicFrame, PublicLayout};
use crate::pages::{admin, auth, console, landing, not_found::NotFound, status};
use crate::i18n::{provide_lang, Lang};
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{ParentRoute, Route, Router, Routes},
    path, SsrMode,
};

const ZONE_SCRIPT: &str = "try{document.cookie='cloudrouter_tz='+encodeURIComponent(Intl.DateTimeFormat().resolvedOptions().timeZone)+';path=/;max-age=31536000;samesite=lax'}catch(e){}";

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    let lang = Lang::detect();
    provide_lang(lang);
    view! {
        <!DOCTYPE html>
        <html lang=lang.html_tag()>
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" type="image/svg+xml" href="/favicon.svg" />
                // The browser's time zone, for people who have not chosen one (English default).
                <script inner_html=ZONE_SCRIPT></script>
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body class="min-h-screen bg-slate-50 text-slate-900 antialiased dark:bg-slate-950 dark:text-slate-100">
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // The server picks the language per request; the browser reads it back from `<html lang>`.
    provide_lang(Lang::detect());
    // Effects run only in the browser: this marks the page as hydrated (tests wait for it).
    Effect::new(|| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });
    // Every page is rendered whole before it is sent (SsrMode::Async): the console works with
    // JavaScript off, and a page can still set its status code (401, 403, 404).
    view! {
        <Stylesheet id="leptos" href="/pkg/cloudrouter.css" />
        <Title formatter=|t: String| if t.is_empty() { "CloudRouter".to_string() } else { format!("{t} · CloudRouter") } />
        <Router>
            <Routes fallback=|| view! { <PublicFrame><NotFound /></PublicFrame> }>
                <ParentRoute path=path!("") view=PublicLayout ssr=SsrMode::Async>
                    <Route path=path!("") view=landing::Landing ssr=SsrMode::Async />
                    <Route path=path!("login") view=auth::Login ssr=SsrMode::Async />
                    <Route path=path!("login/code") view=auth::LoginCode ssr=SsrMode::Async />
                    <Route path=path!("signup") view=auth::Signup ssr=SsrMode::Async />
                    <Route path=path!("signup/sent") view=auth::SignupSent ssr=SsrMode::Async />
                    <Route path=path!("signup/confirm") view=auth::ConfirmSignup ssr=SsrMode::Async />
                    <Route path=path!("password/forgot") view=auth::ForgotPassword ssr=SsrMode::Async />
                    <Route path=path!("password/sent") view=auth::ResetSent ssr=SsrMode::Async />
                    <Route path=path!("password/reset") view=auth::ResetPassword ssr=SsrMode::Async />
                    <Route path=path!("status") view=status::StatusPage ssr=SsrMode::Async />
                </ParentRoute>
                <ParentRoute path=path!("console") view=ConsoleLayout ssr=SsrMode::Async>
                    <Route path=path!("") view=console::overview::Overview ssr=SsrMode::Async />
                    <Route path=path!("quickstart") view=console::quickstart::QuickStart ssr=SsrMode::Async />
                    <Route path=path!("keys") view=console::keys::Keys ssr=SsrMode::Async />
                    <Route path=path!("usage") view=console::usage::Usage ssr=SsrMode::Async />
                    <Route path=path!("billing") view=console::billing::Billing ssr=SsrMode::Async />
                    <Route path=path!("plans") view=console::plans::Plans ssr=SsrMode::Async />
                    <Route path=path!("pay/:id") view=console::pay::Pay ssr=SsrMode::Async />
                    <Route path=path!("invoices") view=console::invoices::Invoices ssr=SsrMode::Async />
                    <Route path=path!("settings") view=console::settings::Settings ssr=SsrMode::Async />
                    <Route path=path!("admin") view=admin::users::Users ssr=SsrMode::Async />
                    <Route path=path!("admin/users/:id") view=admin::users::UserDetail ssr=SsrMode::Async />
                    <Route path=path!("admin/upstreams") view=admin::upstreams::Upstreams ssr=SsrMode::Async />
                    <Route path=path!("admin/catalogue") view=admin::catalogue::Catalogue ssr=SsrMode::Async />
                    <Route path=path!("admin/billing") view=admin::billing::BillingQueue ssr=SsrMode::Async />
                    <Route path=path!("admin/operations") view=admin::operations::Operations ssr=SsrMode::Async />
                    <Route path=path!("admin/incidents") view=admin::incidents::Incidents ssr=SsrMode::Async />
                    <Route path=path!("admin/plans") view=admin::plans::PlansAdmin ssr=SsrMode::Async />
                    <Route path=path!("admin/audit") view=admin::audit::Audit ssr=SsrMode::Async />
                    <Route path=path!("admin/redeem") view=admin::redeem::RedeemAdmin ssr=SsrMode::Async />
                </ParentRoute>
            </Routes>
        </Router>
    }
}
