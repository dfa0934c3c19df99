use crate::api::account::ChangePassword;
use crate::components::form::{ActionMessage, Field, SubmitButton};
use crate::components::layout::use_session_user;
use crate::i18n::t;
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
        </div>
    }
}
