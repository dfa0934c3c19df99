use crate::api::account::{two_factor, BeginTwoFactor, ChangePassword, ConfirmTwoFactor, DisableTwoFactor, RecoveryCodes, TwoFactorView};
use crate::api::alerts::{alert_settings, AlertSettingsView, RemoveAlertWebhook, SetAlertWebhook, SetLowBalance};
use crate::components::form::{successes, ActionError, ActionMessage, Field, SubmitButton};
use crate::components::layout::use_session_user;
use crate::i18n::{t, tf};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Settings() -> impl IntoView {
    let user = use_session_user();
    let change = ServerAction::<ChangePassword>::new();
    view! {
        <Title text=t("Settings") />
        <h1 class="page-title">{t("Settings")}</h1>
        <div class="mt-6 grid gap-6 lg:grid-cols-2">
            <section class="card">
                <h2 class="section-title">{t("Account")}</h2>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        user.await.ok().flatten().map(|u| view! {
                            <dl class="mt-3 text-sm">
                                <dt class="text-slate-500">{t("Email")}</dt>
                                <dd class="font-medium">{u.email}</dd>
                                <dt class="mt-3 text-slate-500">{t("Role")}</dt>
                                <dd class="font-medium">{if u.is_staff { t("Support staff") } else { t("Customer") }}</dd>
                            </dl>
                        })
                    })}
                </Suspense>
            </section>
            <section class="card">
                <h2 class="section-title">{t("Change password")}</h2>
                <ActionForm action=change attr:class="mt-4 space-y-4">
                    <Field label=t("Current password") name="current" kind="password" autocomplete="current-password" />
                    <Field label=t("New password") name="new" kind="password" autocomplete="new-password"
                        hint=t("At least 10 characters, mixing letters with digits or symbols.") />
                    <Field label=t("Repeat new password") name="confirm" kind="password" autocomplete="new-password" />
                    <ActionMessage value=change.value() />
                    <SubmitButton label=t("Change password") pending=change.pending() />
                </ActionForm>
            </section>
            <crate::pages::console::time_zone::TimeZoneSection />
            <TwoFactor />
            <Alerts />
        </div>
    }
}

/// Alerts: the low-balance threshold and the webhook (its signing secret shown once, right
/// after it is made). Plain forms, so they work with JavaScript off.
#[component]
fn Alerts() -> impl IntoView {
    let threshold = ServerAction::<SetLowBalance>::new();
    let webhook = ServerAction::<SetAlertWebhook>::new();
    let remove = ServerAction::<RemoveAlertWebhook>::new();
    let (saved, set_hook, removed) = (successes(threshold.value()), successes(webhook.value()), successes(remove.value()));
    let settings = Resource::new(move || (saved.get(), set_hook.get(), removed.get()), |_| alert_settings());
    view! {
        <section class="card lg:col-span-2" id="alerts">
            <h2 class="section-title">{t("Alerts")}</h2>
            <p class="muted mt-1 text-sm">{t("We mail you when your balance goes below your threshold, when you have used 80% and all of your plan's allowance, and when an API key reaches its spending limit: once each time, and again only after it was back above. A webhook gets the same alerts as signed JSON.")}</p>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match settings.await {
                        Ok(s) => view! { <AlertForms s threshold webhook remove /> }.into_any(),
                        Err(e) => view! { <p role="alert" class="alert-error mt-3">{crate::api::error_text(&e)}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn AlertForms(
    s: AlertSettingsView,
    threshold: ServerAction<SetLowBalance>,
    webhook: ServerAction<SetAlertWebhook>,
    remove: ServerAction<RemoveAlertWebhook>,
) -> impl IntoView {
    let secret = move || webhook.value().get().and_then(Result::ok);
    view! {
        <ActionForm action=threshold attr:class="mt-4 grid gap-4 sm:grid-cols-2 sm:items-end">
            <Field label=t("Low-balance threshold (¥)") name="amount" value=s.low_balance required=false placeholder="50.00"
                hint=t("Leave empty to turn the low-balance alert off.") />
            <SubmitButton label=t("Save threshold") pending=threshold.pending() />
        </ActionForm>
        <div class="mt-2"><ActionMessage value=threshold.value() /></div>
        {match s.webhook_url {
            Some(url) => view! {
                <p class="mt-6 text-sm" data-testid="alert-webhook">{t("Alerts are also sent to:")}" "<code class="break-all font-mono">{url}</code></p>
                <ActionForm action=remove attr:class="mt-3">
                    <button type="submit" class="btn-danger">{t("Remove webhook")}</button>
                </ActionForm>
            }.into_any(),
            None => view! { <p class="muted mt-6 text-sm">{t("No webhook: alerts come by mail only.")}</p> }.into_any(),
        }}
        <ActionMessage value=remove.value() />
        <ActionForm action=webhook attr:class="mt-4 grid gap-4 sm:grid-cols-2 sm:items-end">
            <Field label=t("Webhook URL") name="url" kind="url" placeholder="https://example.com/cloudrouter-alerts"
                hint=t("Setting it makes a new signing secret; the old one stops working.") />
            <SubmitButton label=t("Set webhook") pending=webhook.pending() />
        </ActionForm>
        <ActionError value=Signal::derive(move || webhook.value().get().map(|r| r.map(|_| ()))) />
        {move || secret().map(|secret| view! {
            <div role="status" class="alert-ok mt-3">
                <p>{t("Your signing secret, shown only now. Each alert carries a CloudRouter-Signature header: t=<unix time>,v1=<hex HMAC-SHA256 of “<t>.<body>” with this secret>. Reject a time more than 5 minutes off and an alert id you have seen.")}</p>
                <code class="mt-2 block break-all font-mono" data-testid="alert-webhook-secret">{secret}</code>
            </div>
        })}
        {(!s.recent.is_empty()).then(|| view! {
            <h3 class="mt-6 font-semibold">{t("Latest alerts")}</h3>
            <ul class="mt-2 space-y-1 text-sm">
                {s.recent.into_iter().map(|(at, what)| view! { <li data-testid="alert-recent"><span class="muted">{at}</span>" · "{what}</li> }).collect_view()}
            </ul>
        })}
    }
}

/// Two-factor sign-in: set up (secret as text, `otpauth://` link and QR code, confirmed with a
/// code), recovery codes shown once, and off again with the password and a code. Every step is a
/// plain form, so it works with JavaScript off.
#[component]
fn TwoFactor() -> impl IntoView {
    let begin = ServerAction::<BeginTwoFactor>::new();
    let confirm = ServerAction::<ConfirmTwoFactor>::new();
    let disable = ServerAction::<DisableTwoFactor>::new();
    let status = Resource::new(
        move || (begin.version().get(), confirm.version().get(), disable.version().get()),
        |_| two_factor(),
    );
    view! {
        <section class="card lg:col-span-2" id="two-factor">
            <h2 class="section-title">{t("Two-factor sign-in")}</h2>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match status.await {
                        Ok(s) => view! { <TwoFactorState s begin confirm disable /> }.into_any(),
                        Err(e) => view! { <p role="alert" class="alert-error mt-3">{crate::api::error_text(&e)}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn TwoFactorState(
    s: TwoFactorView,
    begin: ServerAction<BeginTwoFactor>,
    confirm: ServerAction<ConfirmTwoFactor>,
    disable: ServerAction<DisableTwoFactor>,
) -> impl IntoView {
    // Codes made just now: by this page's action (JavaScript on) or by the post this page answers.
    let just_made = s.just_made.clone();
    let codes = move || confirm.value().get().and_then(Result::ok).or_else(|| just_made.clone());
    let required = s.required.then(|| view! {
        <p role="alert" class="alert-error mt-3">{t("Staff accounts need two-factor sign-in: set it up under Settings first.")}</p>
    });
    let body = if s.enabled {
        view! {
            <p class="mt-3 text-sm" data-testid="two-factor-on">
                {tf("On. Signing in takes a code from your authenticator app after the password. Recovery codes left: {}.", &[&s.recovery_codes_left])}
            </p>
            <ActionForm action=disable attr:class="mt-4 grid gap-4 sm:grid-cols-3 sm:items-end">
                <Field label=t("Password") name="password" kind="password" autocomplete="current-password" />
                <Field label=t("Code") name="code" autocomplete="one-time-code" />
                <SubmitButton label=t("Turn off two-factor sign-in") pending=disable.pending() />
            </ActionForm>
            <ActionMessage value=disable.value() />
        }
        .into_any()
    } else if let Some(setup) = s.setup {
        view! {
            <ol class="mt-3 list-decimal space-y-3 pl-5 text-sm">
                <li>
                    {t("Scan the QR code with an authenticator app, or enter this key in it:")}
                    {setup.qr_svg.map(|svg| view! { <div class="mt-2 inline-block rounded-lg bg-white p-3" data-testid="totp-qr" inner_html=svg></div> })}
                    <code class="mt-2 block break-all font-mono" data-testid="totp-secret">{setup.secret}</code>
                    <a class="link mt-1 block break-all text-xs" href=setup.uri.clone()>{setup.uri.clone()}</a>
                </li>
                <li>{t("Enter the 6-digit code the app shows to turn two-factor sign-in on.")}</li>
            </ol>
            <ActionForm action=confirm attr:class="mt-4 grid gap-4 sm:grid-cols-2 sm:items-end">
                <Field label=t("Code") name="code" autocomplete="one-time-code" />
                <SubmitButton label=t("Turn on two-factor sign-in") pending=confirm.pending() />
            </ActionForm>
            <ActionError value=Signal::derive(move || confirm.value().get().map(|r| r.map(|_| ()))) />
        }
        .into_any()
    } else {
        view! {
            <p class="mt-3 text-sm text-slate-600 dark:text-slate-400">
                {t("Off. With it on, signing in takes a code from an authenticator app after the password.")}
            </p>
            <ActionForm action=begin attr:class="mt-4">
                <SubmitButton label=t("Set up two-factor sign-in") pending=begin.pending() />
            </ActionForm>
            <ActionError value=begin.value() />
        }
        .into_any()
    };
    view! {
        {required}
        {move || codes().map(|c| view! { <RecoveryCodesOnce c /> })}
        {body}
    }
}

#[component]
fn RecoveryCodesOnce(c: RecoveryCodes) -> impl IntoView {
    view! {
        <div role="status" class="alert-ok mt-4" data-testid="recovery-codes">
            <p class="font-medium">{t("Two-factor sign-in is on. Save these recovery codes now: each signs you in once without the app, and they will not be shown again.")}</p>
            <ul class="mt-2 grid grid-cols-2 gap-1 font-mono text-sm sm:grid-cols-5">
                {c.codes.into_iter().map(|code| view! { <li>{code}</li> }).collect_view()}
            </ul>
        </div>
    }
}
