//! The Billing page's redeem-code form: the answer (what the code gave, or why not) shows next
//! to it; the page's balance and ledger reload on the action's version (see `billing.rs`).

use crate::api::redeem::RedeemCode;
use crate::components::form::ActionMessage;
use crate::i18n::t;
use leptos::prelude::*;

#[component]
pub fn RedeemForm(action: ServerAction<RedeemCode>) -> impl IntoView {
    view! {
        <section class="card mt-6" id="redeem">
            <h2 class="section-title">{t("Redeem a code")}</h2>
            <ActionForm action attr:class="mt-3 flex flex-wrap items-end gap-3">
                <label class="block grow">
                    <span class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("Redeem code")}</span>
                    <input name="code" required autocomplete="off" spellcheck="false" placeholder="XXXX-XXXX-XXXX-XXXX-XXXX" class="input mt-1 font-mono" />
                </label>
                <button type="submit" class="btn-primary">{t("Redeem")}</button>
            </ActionForm>
            <div class="mt-3"><ActionMessage value=action.value() /></div>
        </section>
    }
}
