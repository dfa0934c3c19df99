//! Sign-in, sign-up and password-reset pages. All are plain forms that post to server functions,
//! so they work with JavaScript off; with it on, errors show in place without a reload.

use crate::api::account::{link_works, ConfirmSignup, ForgotPassword, Login, LoginCode, ResetPassword, Signup};
use crate::components::form::{ActionError, Field, SubmitButton};
use crate::components::loaded::Loaded;
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
    let query = use_query_map();
    let next = query.with_untracked(|q| q.get("next")).unwrap_or_default();
    let was_reset = query.with_untracked(|q| q.get("reset").is_some());
    view! {
        <AuthCard title=t("Sign in") subtitle=t("Welcome back to CloudRouter.")>
            {was_reset.then(|| view! { <p role="status" class="alert-ok mb-4">{t("Your password is changed. Sign in with the new one.")}</p> })}
            <ActionForm action attr:class="space-y-4">
                <input type="hidden" name="next" value=next />
                <Field label=t("Email") name="email" kind="email" autocomplete="email" />
                <Field label=t("Password") name="password" kind="password" autocomplete="current-password" />
                <ActionError value=action.value() />
                <SubmitButton label=t("Sign in") pending=action.pending() />
            </ActionForm>
            <p class="mt-4 text-center text-sm text-slate-600 dark:text-slate-400">
                <a href="/password/forgot" class="link">{t("Forgot your password?")}</a>
            </p>
            <p class="mt-2 text-center text-sm text-slate-600 dark:text-slate-400">
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

/// After a sign-up request: the same page whether or not the address already had an account.
#[component]
pub fn SignupSent() -> impl IntoView {
    view! {
        <AuthCard title=t("Check your email") subtitle=t("One more step to create your account.")>
            <p role="status" class="text-sm" data-testid="mail-sent">
                {t("We sent a link to the address you entered. Open it within 24 hours to finish creating your account. No mail after a few minutes? Check your spam folder, or sign up again.")}
            </p>
        </AuthCard>
    }
}

/// The token of a mailed link, from the page's query.
fn link_token() -> String {
    use_query_map().with_untracked(|q| q.get("token")).unwrap_or_default()
}

/// A page opened from a mailed link: `children` (its form, which posts the token) while the link
/// works; otherwise says so, with the way to get a new one.
#[component]
fn MailedLink(token: String, reset: bool, again: &'static str, again_label: &'static str, children: ChildrenFn) -> impl IntoView {
    let works = Resource::new(move || (), move |_| link_works(token.clone(), reset));
    view! {
        <Loaded resource=works let:works>
            {if works {
                children().into_any()
            } else {
                view! {
                    <p role="alert" class="alert-error">{t("This link has expired or was already used. Ask for a new one.")}</p>
                    <p class="mt-4 text-center text-sm"><a href=again class="link">{again_label}</a></p>
                }.into_any()
            }}
        </Loaded>
    }
}

/// Opened from the sign-up mail: one button creates the account (a button, not the visit, so
/// a mail scanner that fetches links does not use it up).
#[component]
pub fn ConfirmSignup() -> impl IntoView {
    let action = ServerAction::<ConfirmSignup>::new();
    let token = StoredValue::new(link_token());
    view! {
        <AuthCard title=t("Create your account") subtitle=t("Your email address is confirmed by this link.")>
            <MailedLink token=token.get_value() reset=false again="/signup" again_label=t("Sign up again")>
                <ActionForm action attr:class="space-y-4">
                    <input type="hidden" name="token" value=token.get_value() />
                    <ActionError value=action.value() />
                    <SubmitButton label=t("Finish creating my account") pending=action.pending() />
                </ActionForm>
            </MailedLink>
        </AuthCard>
    }
}

#[component]
pub fn ForgotPassword() -> impl IntoView {
    let action = ServerAction::<ForgotPassword>::new();
    view! {
        <AuthCard title=t("Reset your password") subtitle=t("We will mail you a link to choose a new one.")>
            <ActionForm action attr:class="space-y-4">
                <Field label=t("Email") name="email" kind="email" autocomplete="email" />
                <ActionError value=action.value() />
                <SubmitButton label=t("Send the link") pending=action.pending() />
            </ActionForm>
            <p class="mt-4 text-center text-sm text-slate-600 dark:text-slate-400">
                <a href="/login" class="link">{t("Back to sign in")}</a>
            </p>
        </AuthCard>
    }
}

/// After a reset request: the same page whether or not the address has an account.
#[component]
pub fn ResetSent() -> impl IntoView {
    view! {
        <AuthCard title=t("Check your email") subtitle=t("Reset your password")>
            <p role="status" class="text-sm" data-testid="mail-sent">
                {t("If an account uses that address, we sent it a link to choose a new password. It works for an hour.")}
            </p>
        </AuthCard>
    }
}

#[component]
pub fn ResetPassword() -> impl IntoView {
    let action = ServerAction::<ResetPassword>::new();
    let token = StoredValue::new(link_token());
    view! {
        <AuthCard title=t("Choose a new password") subtitle=t("Changing it signs you out everywhere.")>
            <MailedLink token=token.get_value() reset=true again="/password/forgot" again_label=t("Ask for a new link")>
                <ActionForm action attr:class="space-y-4">
                    <input type="hidden" name="token" value=token.get_value() />
                    <Field label=t("New password") name="password" kind="password" autocomplete="new-password"
                        hint=t("At least 10 characters, mixing letters with digits or symbols.") />
                    <Field label=t("Repeat password") name="confirm" kind="password" autocomplete="new-password" />
                    <ActionError value=action.value() />
                    <SubmitButton label=t("Set the new password") pending=action.pending() />
                </ActionForm>
            </MailedLink>
        </AuthCard>
    }
}
