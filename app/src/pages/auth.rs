//! Sign-in and sign-up pages. Both are plain forms that post to server functions, so they work
//! with JavaScript off; with it on, errors show in place without a reload.

use crate::api::account::{Login, LoginCode, Signup};
use crate::components::form::{ActionError, Field, SubmitButton};
use crate::i18n::t;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
fn AuthCard(title: &'static str, subtitle: &'static str, children: Children) -> impl IntoView {
    view! {
        <Title text=title />
        <div class="mx-auto max-w-md px-4 py-16">
            <h1 class="text-2xl font-semibold tracking-tight">{title}</h1>
            <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">{subtitle}</p>
            <div class="card mt-6">{children()}</div>
        </div>
    }
}

#[component]
pub fn Login() -> impl IntoView {
    let action = ServerAction::<Login>::new();
    let next = use_query_map().with_untracked(|q| q.get("next")).unwrap_or_default();
    view! {
        <AuthCard title=t("Sign in") subtitle=t("Welcome back to CloudRouter.")>
            <ActionForm action attr:class="space-y-4">
                <input type="hidden" name="next" value=next />
                <Field label=t("Email") name="email" kind="email" autocomplete="email" />
                <Field label=t("Password") name="password" kind="password" autocomplete="current-password" />
                <ActionError value=action.value() />
                <SubmitButton label=t("Sign in") pending=action.pending() />
            </ActionForm>
            <p class="mt-4 text-center text-sm text-slate-600 dark:text-slate-400">
                {t("New here? ")} <a href="/signup" class="link">{t("Create an account")}</a>
            </p>
        </AuthCard>
    }
}

#[component]
pub fn Signup() -> impl IntoView {
    let action = ServerAction::<Signup>::new();
    view! {
        <AuthCard title=t("Create your account") subtitle=t("One key for Opus, Sonnet and Haiku, at up to 80% below list price.")>
            <ActionForm action attr:class="space-y-4">
                <Field label=t("Email") name="email" kind="email" autocomplete="email" />
                <Field label=t("Password") name="password" kind="password" autocomplete="new-password"
                    hint=t("At least 10 characters, mixing letters with digits or symbols.") />
                <Field label=t("Repeat password") name="confirm" kind="password" autocomplete="new-password" />
                <ActionError value=action.value() />
                <SubmitButton label=t("Create account") pending=action.pending() />
            </ActionForm>
            <p class="mt-4 text-center text-sm text-slate-600 dark:text-slate-400">
                {t("Already have an account? ")} <a href="/login" class="link">{t("Sign in")}</a>
            </p>
        </AuthCard>
    }
}

/// The second step of signing in with two-factor sign-in on.
#[component]
pub fn LoginCode() -> impl IntoView {
    let action = ServerAction::<LoginCode>::new();
    view! {
        <AuthCard title=t("Two-factor sign-in") subtitle=t("Enter the 6-digit code from your authenticator app, or one of your recovery codes.")>
            <ActionForm action attr:class="space-y-4">
                <Field label=t("Code") name="code" autocomplete="one-time-code" />
                <ActionError value=action.value() />
                <SubmitButton label=t("Sign in") pending=action.pending() />
            </ActionForm>
            <p class="mt-4 text-center text-sm text-slate-600 dark:text-slate-400">
                <a href="/login" class="link">{t("Start again")}</a>
            </p>
        </AuthCard>
    }
}
