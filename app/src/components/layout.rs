//! The two frames every page sits in: the public one (landing, sign-in) and the console.

use crate::api::account::{me, Logout, SessionUser, SetLanguage};
use crate::i18n::Lang;
use crate::i18n::t;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;
use leptos_router::components::{Outlet, A};

#[component]
fn Logo() -> impl IntoView {
    view! {
        <a href="/" class="flex items-center gap-2 font-semibold tracking-tight">
            <img src="/favicon.svg" alt="" class="h-7 w-7" />
            <span class="text-lg">"CloudRouter"</span>
        </a>
    }
}

/// The public frame as a route: its pages render in the outlet.
#[component]
pub fn PublicLayout() -> impl IntoView {
    view! { <PublicFrame><Outlet /></PublicFrame> }
}

#[component]
pub fn PublicFrame(children: Children) -> impl IntoView {
    let user = Resource::new(|| (), |_| me());
    view! {
        <div class="flex min-h-screen flex-col">
            <header class="border-b border-slate-200 bg-white/80 backdrop-blur dark:border-slate-800 dark:bg-slate-900/80">
                <nav class="mx-auto flex max-w-6xl flex-wrap items-center justify-between gap-x-3 gap-y-1 px-4 py-3">
                    <Logo />
                    <div class="flex flex-wrap items-center justify-end gap-2 text-sm">
                        <a href="/#pricing" class="hidden px-3 py-2 text-slate-600 hover:text-slate-900 sm:inline dark:text-slate-300 dark:hover:text-white">{t("Pricing")}</a>
                        <a href="/status" class="hidden px-3 py-2 text-slate-600 hover:text-slate-900 sm:inline dark:text-slate-300 dark:hover:text-white">{t("Status")}</a>
                        <LanguageSwitch />
                        <Suspense fallback=|| ()>
                            {move || Suspend::new(async move {
                                match user.await {
                                    Ok(Some(_)) => view! { <a href="/console" class="btn-primary">{t("Open console")}</a> }.into_any(),
                                    _ => view! {
                                        <a href="/login" class="btn-ghost">{t("Sign in")}</a>
                                        <a href="/signup" class="btn-primary">{t("Create account")}</a>
                                    }.into_any(),
                                }
                            })}
                        </Suspense>
                    </div>
                </nav>
            </header>
            <main class="flex-1">{children()}</main>
            <footer class="border-t border-slate-200 py-6 text-center text-xs text-slate-500 dark:border-slate-800">
                {t("CloudRouter · genuine Claude models only · ")}
                <a class="underline" href="mailto:support_cloudrouter@clouditera.com">"support_cloudrouter@clouditera.com"</a>
                " · "<a class="underline" href="/status" data-testid="footer-status">{t("System status")}</a>
            </footer>
        </div>
    }
}

/// Two buttons, 中文 and English, posting to `set_language` as a plain form: the server sets the
/// cookie (and the account's saved language) and redirects back, so the whole page reloads in the
/// new language, with JavaScript or without.
#[component]
fn LanguageSwitch() -> impl IntoView {
    let location = leptos_router::hooks::use_location();
    let back = move || {
        let search = location.search.get();
        let path = location.pathname.get();
        if search.is_empty() { path } else { format!("{path}?{search}") }
    };
    let current = crate::i18n::lang();
    let button = move |lang: Lang, label: &'static str| {
        let active = current == lang;
        view! {
            <button
                type="submit"
                name="lang"
                value=lang.code()
                lang=lang.html_tag()
                aria-pressed=if active { "true" } else { "false" }
                class=if active { "px-2 py-1 font-semibold text-slate-900 dark:text-white" } else { "px-2 py-1 text-slate-500 hover:text-slate-900 dark:hover:text-white" }
            >{label}</button>
        }
    };
    view! {
        <form method="post" action=set_language_url() class="flex items-center text-xs" data-testid="language-switch">
            <input type="hidden" name="back" value=back />
            {button(Lang::Zh, "中文")}
            <span class="text-slate-300 dark:text-slate-600" aria-hidden="true">"|"</span>
            {button(Lang::En, "English")}
        </form>
    }
}

struct NavItem {
    href: &'static str,
    label: &'static str,
}

const CUSTOMER_NAV: &[NavItem] = &[
    NavItem { href: "/console", label: "Overview" },
    NavItem { href: "/console/quickstart", label: "Quick start" },
    NavItem { href: "/console/keys", label: "API keys" },
    NavItem { href: "/console/usage", label: "Usage" },
    NavItem { href: "/console/plans", label: "Plans" },
    NavItem { href: "/console/billing", label: "Billing" },
    NavItem { href: "/console/invoices", label: "Invoices" },
    NavItem { href: "/console/settings", label: "Settings" },
];

const STAFF_NAV: &[NavItem] = &[
    NavItem { href: "/console/admin", label: "Users" },
    NavItem { href: "/console/admin/operations", label: "Operations" },
    NavItem { href: "/console/admin/incidents", label: "Incidents" },
    NavItem { href: "/console/admin/billing", label: "Billing queue" },
    NavItem { href: "/console/admin/upstreams", label: "Upstreams" },
    NavItem { href: "/console/admin/catalogue", label: "Models & channels" },
    NavItem { href: "/console/admin/plans", label: "Plans & prices" },
    NavItem { href: "/console/admin/redeem", label: "Redeem codes" },
    NavItem { href: "/console/admin/audit", label: "Audit log" },
];

fn nav_links(items: &'static [NavItem]) -> impl IntoView {
    items
        .iter()
        .map(|item| {
            view! {
                <A href=item.href exact=true attr:class="nav-link">{t(item.label)}</A>
            }
        })
        .collect_view()
}

/// The signed-in frame. The current user is loaded once here and shared with the pages below.
/// The pages' outlet stays outside any suspense on the user, so a page renders (and creates its
/// resources) exactly once, on the server and when hydrating alike.
#[component]
pub fn ConsoleLayout() -> impl IntoView {
    let user = Resource::new(|| (), |_| me());
    provide_context(user);
    let logout = ServerAction::<Logout>::new();
    let signed_in = move |f: fn(SessionUser) -> AnyView| {
        move || Suspend::new(async move { user.await.ok().flatten().map(f) })
    };
    view! {
        <div class="min-h-screen md:flex">
            <aside class="border-b border-slate-200 bg-white md:sticky md:top-0 md:h-screen md:w-60 md:shrink-0 md:border-b-0 md:border-r dark:border-slate-800 dark:bg-slate-900">
                <div class="flex items-center justify-between px-4 py-3 md:py-5">
                    <Logo />
                </div>
                // Phones: one menu that reaches every section.
                <details class="px-2 pb-2 md:hidden" data-testid="console-menu">
                    <summary class="btn-ghost w-full cursor-pointer list-none justify-between">{t("Menu")}<span aria-hidden="true">"☰"</span></summary>
                    <nav aria-label=t("Console") class="mt-2 flex flex-col gap-1">
                        {nav_links(CUSTOMER_NAV)}
                        <Suspense fallback=|| ()>
                            {signed_in(|u| u.is_staff.then(|| view! {
                                <p class="px-3 pt-3 text-xs font-semibold uppercase tracking-wide text-slate-400">{t("Admin")}</p>
                                {nav_links(STAFF_NAV)}
                            }).into_any())}
                        </Suspense>
                    </nav>
                </details>
                <nav aria-label=t("Console") class="hidden gap-1 px-2 pb-2 md:flex md:flex-col">
                    {nav_links(CUSTOMER_NAV)}
                    <Suspense fallback=|| ()>
                        {signed_in(|u| u.is_staff.then(|| view! {
                            <p class="hidden px-3 pt-4 text-xs font-semibold uppercase tracking-wide text-slate-400 md:block">{t("Admin")}</p>
                            {nav_links(STAFF_NAV)}
                        }).into_any())}
                    </Suspense>
                </nav>
            </aside>
            <div class="min-w-0 flex-1">
                <header class="flex flex-wrap items-center justify-end gap-x-3 gap-y-1 border-b border-slate-200 px-4 py-3 text-sm dark:border-slate-800">
                    <Suspense fallback=|| ()>
                        {signed_in(|u| view! {
                            <span class="truncate text-slate-600 dark:text-slate-400" data-testid="current-user">{u.email}</span>
                            {u.is_staff.then(|| view! { <span class="badge">{t("Staff")}</span> })}
                        }.into_any())}
                    </Suspense>
                    <LanguageSwitch />
                    <ActionForm action=logout>
                        <button type="submit" class="btn-ghost">{t("Sign out")}</button>
                    </ActionForm>
                </header>
                <main class="mx-auto max-w-6xl px-4 py-6 md:px-8">
                    <Outlet />
                    <p class="mt-10 text-xs text-slate-500" data-testid="time-zone">
                        <Suspense fallback=|| ()>
                            {signed_in(|u| view! {
                                {crate::i18n::tf("Times are shown in {}.", &[&u.time_zone])}
                                " "
                                <a href="/console/settings#time-zone" class="link">{t("Change")}</a>
                            }.into_any())}
                        </Suspense>
                    </p>
                </main>
            </div>
        </div>
    }
}

/// The signed-in user, for pages inside the console frame.
pub fn use_session_user() -> Resource<Result<Option<SessionUser>, ServerFnError>> {
    expect_context()
}

fn set_language_url() -> &'static str {
    <SetLanguage as leptos::server_fn::ServerFn>::PATH
}
