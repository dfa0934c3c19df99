//! Staff: find customers, open one, suspend or reinstate.

use crate::components::loaded::Loaded;
use crate::api::admin::{admin_tokens, adjust_form, get_user, list_users, user_billing, user_keys, AdjustBalance, AdjustFormView, RevokeAdminToken, SetSuspended, TurnOffTwoFactor};
use crate::api::billing_admin::{admin_plans, cloudrouter_plan::PlanForm, OfferPlan};
use crate::components::form::Field;
use crate::pages::console::billing::BalanceAndLedger;
use crate::components::form::{successes, ActionMessage};
use crate::i18n::{label, t, tf};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

#[component]
pub fn Users() -> impl IntoView {
    let query = use_query_map();
    let get = move |k: &str| query.with(|m| m.get(k).unwrap_or_default());
    let q = move || get("q");
    let users = Resource::new(move || (q(), get("sort"), get("dir")), |(q, sort, dir)| list_users(q, sort, dir));
    let revoke = ServerAction::<RevokeAdminToken>::new();
    let tokens = Resource::new(move || revoke.version().get(), |_| admin_tokens());
    // a column header sorts by its column; the current one again flips the direction
    let sorter = move |code: &'static str, words: &'static str, right: bool| {
        let sort = get("sort");
        let current = (if sort.is_empty() { "joined" } else { sort.as_str() }) == code;
        let ascending = get("dir") == "asc";
        let dir = if current && !ascending { "asc" } else { "desc" };
        let mut params = vec![("sort", code.to_string()), ("dir", dir.to_string())];
        if !q().is_empty() {
            params.insert(0, ("q", q()));
        }
        let href = format!("/console/admin?{}", params.iter().map(|(k, v)| format!("{k}={}", crate::api::usage::urlencode(v))).collect::<Vec<_>>().join("&"));
        let sort_state = current.then_some(if ascending { "ascending" } else { "descending" });
        view! {
            <th class=if right { "text-right" } else { "" } aria-sort=sort_state>
                <a class="link whitespace-nowrap" href=href data-testid=format!("sort-{code}")>
                    {t(words)}{current.then_some(if ascending { " ▲" } else { " ▼" })}
                </a>
            </th>
        }
    };
    view! {
        <Title text=t("Users") />
        <h1 class="page-title">{t("Users")}</h1>
        <form method="get" class="mt-4 flex max-w-md gap-2" role="search">
            <input type="search" name="q" value=q placeholder=t("Search by email") class="input" aria-label=t("Search by email") />
            <input type="hidden" name="sort" value=move || get("sort") />
            <input type="hidden" name="dir" value=move || get("dir") />
            <button type="submit" class="btn-ghost">{t("Search")}</button>
        </form>
        // the tokens only under a list that loaded: a customer sees one refusal, not two
        <Loaded resource=users let:list>
            {if list.is_empty() {
                view! { <p class="mt-6 text-slate-500">{t("No users match.")}</p> }.into_any()
            } else {
                view! {
                        <div class="card mt-6 overflow-x-auto p-0">
                            <table class="table" data-testid="users-table">
                                <thead><tr>
                                    <th>{t("Email")}</th><th>{t("Role")}</th><th>{t("Status")}</th>
                                    {sorter("plan", "Plan", false)}
                                    {sorter("balance", "Balance", true)}
                                    {sorter("spend", "Spent, last 30 days", true)}
                                    {sorter("joined", "Joined", false)}
                                </tr></thead>
                                <tbody>
                                    {list.into_iter().map(|u| view! {
                                        <tr data-testid="user-row">
                                            <td><a class="link" href=format!("/console/admin/users/{}", u.id)>{u.email}</a></td>
                                            <td>{if u.is_staff { t("Staff") } else { t("Customer") }}</td>
                                            <td>{if u.suspended { t("Suspended") } else { t("Active") }}</td>
                                            <td data-testid="user-plan">{u.plan.unwrap_or_else(|| t("Pay-as-you-go").into())}</td>
                                            <td class="text-right tabular-nums" title=u.balance_exact data-testid="user-balance">{u.balance}</td>
                                            <td class="text-right tabular-nums" title=u.spend_30d_exact data-testid="user-spend">{u.spend_30d}</td>
                                            <td class="whitespace-nowrap text-slate-500">{u.created}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </div>
                }.into_any()
            }}
            <StaffTokens tokens revoke />
        </Loaded>
    }
}

/// Staff API tokens: who holds which, until when; revoked at once from here.
#[component]
fn StaffTokens(tokens: Resource<Result<Vec<crate::api::admin::TokenView>, ServerFnError>>, revoke: ServerAction<RevokeAdminToken>) -> impl IntoView {
    view! {
        <section class="card mt-6" data-testid="staff-tokens">
            <h2 class="section-title">{t("Staff API tokens")}</h2>
            <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">
                {t("Tokens for the staff API (/api/admin/v1), issued on the server with `server admin token --email E --days N` (90 days unless set). Expired and revoked tokens are refused.")}
            </p>
            <Loaded resource=tokens let:list>
                {if list.is_empty() {
                    view! { <p class="mt-4 text-slate-500">{t("No staff API tokens yet.")}</p> }.into_any()
                } else {
                    view! {
                        <div class="mt-4 overflow-x-auto">
                            <table class="table">
                                <thead><tr><th>{t("Prefix")}</th><th>{t("Holder")}</th><th>{t("Issued")}</th><th>{t("Last used")}</th><th>{t("Valid until")}</th><th>{t("Status")}</th><th></th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|k| view! {
                                        <tr>
                                            <td class="font-mono text-xs">{k.prefix}</td>
                                            <td>{k.owner}</td>
                                            <td class="whitespace-nowrap text-slate-500">{k.created}</td>
                                            <td class="whitespace-nowrap text-slate-500">{k.last_used.unwrap_or_else(|| t("never").into())}</td>
                                            <td class="whitespace-nowrap text-slate-500">{k.expires}</td>
                                            <td>{k.status}</td>
                                            <td>
                                                {k.active.then(|| view! {
                                                    <ActionForm action=revoke>
                                                        <input type="hidden" name="id" value=k.id.clone() />
                                                        <button type="submit" class="btn-danger">{t("Revoke")}</button>
                                                    </ActionForm>
                                                })}
                                            </td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </div>
                    }.into_any()
                }}
            </Loaded>
            <div class="mt-3"><ActionMessage value=revoke.value() /></div>
        </section>
    }
}

/// Resources are all created here, at the top of the page and never inside a suspense, so the
/// server and the hydrating browser agree on them.
#[component]
pub fn UserDetail() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let suspend = ServerAction::<SetSuspended>::new();
    let two_factor_off = ServerAction::<TurnOffTwoFactor>::new();
    let adjust = ServerAction::<AdjustBalance>::new();
    let offer = ServerAction::<OfferPlan>::new();
    let clear = ServerAction::<crate::api::catalogue::ClearBindings>::new();
    let plans = Resource::new(|| (), |_| admin_plans());
    // a fresh, empty form (and idempotency key) after each adjustment that went through; a
    // refused one keeps what was typed and its key
    let adjusted = successes(adjust.value());
    let form = Resource::new(move || adjusted.get(), |_| adjust_form());
    let user = Resource::new(move || (id(), suspend.version().get(), two_factor_off.version().get()), |(id, _, _)| get_user(id));
    let billing = Resource::new(move || (id(), adjust.version().get()), |(id, _)| user_billing(id));
    let keys = Resource::new(id, user_keys);
    view! {
        <Title text=t("User") />
        <a href="/console/admin" class="link text-sm">{t("← Users")}</a>
        <Loaded resource=user let:u>
                    {
                        let uid = u.id.clone();
                        let offer_uid = u.id.clone();
                        let clear_uid = u.id.clone();
                        let two_factor_uid = u.id.clone();
                        view! {
                        <h1 class="page-title mt-2">{u.email.clone()}</h1>
                        <section class="card mt-6">
                            <dl class="grid grid-cols-2 gap-3 text-sm sm:grid-cols-4">
                                <div><dt class="text-slate-500">{t("Role")}</dt><dd class="font-medium">{if u.is_staff { t("Staff") } else { t("Customer") }}</dd></div>
                                <div><dt class="text-slate-500">{t("Status")}</dt><dd class="font-medium" data-testid="user-status">{if u.suspended { t("Suspended") } else { t("Active") }}</dd></div>
                                <div><dt class="text-slate-500">{t("Joined")}</dt><dd class="font-medium">{u.created.clone()}</dd></div>
                                <div class="col-span-2 sm:col-span-4"><dt class="text-slate-500">{t("Plan")}</dt><dd class="font-medium" data-testid="user-plan">{u.plan.clone().unwrap_or_else(|| t("Pay-as-you-go").into())}</dd></div>
                                <div><dt class="text-slate-500">"ID"</dt><dd class="truncate font-mono text-xs">{u.id.clone()}</dd></div>
                            </dl>
                            <ActionForm action=suspend attr:class="mt-4 flex items-center gap-3">
                                <input type="hidden" name="id" value=u.id.clone() />
                                <input type="hidden" name="suspend" value=(!u.suspended).to_string() />
                                <button type="submit" class=if u.suspended { "btn-ghost" } else { "btn-danger" }>
                                    {if u.suspended { t("Reinstate account") } else { t("Suspend account") }}
                                </button>
                            </ActionForm>
                            <div class="mt-3"><ActionMessage value=suspend.value() /></div>
                            {u.two_factor.then(|| view! {
                                <ActionForm action=two_factor_off attr:class="mt-4 space-y-2">
                                    <input type="hidden" name="id" value=two_factor_uid />
                                    <Field label=t("How the owner was verified (required, audited)") name="note"
                                        hint=t("Only for an owner who lost both their authenticator and their recovery codes. Their sessions end and they are mailed.") />
                                    <button type="submit" class="btn-danger">{t("Turn off two-factor sign-in")}</button>
                                </ActionForm>
                            })}
                            <div class="mt-3"><ActionMessage value=two_factor_off.value() /></div>
                            <ActionForm action=clear attr:class="mt-4">
                                <input type="hidden" name="user_id" value=clear_uid />
                                <button type="submit" class="btn-ghost">{t("Clear conversation bindings")}</button>
                            </ActionForm>
                            <div class="mt-3"><ActionMessage value=clear.value() /></div>
                        </section>
                        <section class="card mt-6">
                            <h2 class="section-title">{t("Adjust balance")}</h2>
                            <Loaded resource=form let:f>
                                <AdjustForm user_id=uid.clone() f adjust />
                            </Loaded>
                            <div class="mt-3"><ActionMessage value=adjust.value() /></div>
                        </section>
                        <section class="card mt-6">
                            <h2 class="section-title">{t("Custom terms")}</h2>
                            <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">
                                {t("After an enterprise enquiry: create the customer's plan under Plans & prices (it need not be for sale), then set it up here. The customer pays the order by bank transfer; the subscription starts when you confirm the transfer and renews on this plan.")}
                            </p>
                            <Loaded resource=plans let:ps>
                                <OfferForm user_id=offer_uid.clone() plans=ps offer />
                            </Loaded>
                            <div class="mt-3"><ActionMessage value=offer.value() /></div>
                        </section>
                    }
                    }
        </Loaded>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                billing.await.ok().map(|b| view! { <BalanceAndLedger b /> })
            })}
        </Suspense>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                keys.await.ok().map(|list| view! {
                    <section class="mt-6">
                        <h2 class="section-title">{t("API keys")}</h2>
                        <div class="card mt-3 overflow-x-auto p-0">
                            <table class="table">
                                <thead><tr><th>{t("Name")}</th><th>{t("Key")}</th><th>{t("Channel")}</th><th>{t("Last used")}</th><th class="text-right">{t("Spent")}</th><th>{t("Status")}</th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|k| view! {
                                        <tr>
                                            <td>{k.name}</td>
                                            <td><code class="text-xs">{format!("{}…", k.prefix)}</code></td>
                                            <td class="capitalize">{label(&k.channel)}</td>
                                            <td class="text-slate-500">{k.last_used.unwrap_or_else(|| t("never").into())}</td>
                                            <td class="text-right tabular-nums">{k.spent}</td>
                                            <td>{if k.revoked { t("Revoked") } else if k.expired { t("Expired") } else { t("Active") }}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </div>
                    </section>
                })
            })}
        </Suspense>
    }
}

/// One rendering of the adjustment form, with its own idempotency key.
#[component]
fn AdjustForm(user_id: String, f: AdjustFormView, adjust: ServerAction<AdjustBalance>) -> impl IntoView {
    view! {
        <ActionForm action=adjust attr:class="mt-4 grid gap-4 sm:grid-cols-2 sm:items-end">
            <input type="hidden" name="id" value=user_id />
            <input type="hidden" name="idempotency_key" value=f.key />
            <Field label=t("Amount (¥, negative to debit)") name="amount" placeholder="100.00" hint=t("At most the maximum per adjustment; amounts above the threshold need the box below ticked.") />
            <Field label=t("Description on the customer's ledger (optional)") name="description" required=false placeholder=t("Credit from CloudRouter support") />
            <Field label=t("Internal note (staff only, required)") name="note" placeholder=t("Bank transfer ref. 2026-1125") />
            <label class="flex items-center gap-2 text-sm">
                <input type="checkbox" name="confirm" value="yes" />
                {tf("I have checked the amount (required above {}; at most {})", &[&f.confirm_above, &f.max])}
            </label>
            <button type="submit" class="btn-primary sm:col-span-2 sm:justify-self-start">{t("Apply")}</button>
        </ActionForm>
    }
}

/// Sets a plan up for the customer on custom terms (any priced plan, listed or not).
#[component]
fn OfferForm(user_id: String, plans: Vec<PlanForm>, offer: ServerAction<OfferPlan>) -> impl IntoView {
    view! {
        <ActionForm action=offer attr:class="mt-4 flex flex-wrap items-end gap-3">
            <input type="hidden" name="id" value=user_id />
            <label class="block text-sm">{t("Plan")}
                <select name="plan" class="input mt-1">
                    {plans.into_iter().map(|p| view! {
                        <option value=p.code.clone()>{format!("{} · ¥{}", crate::i18n::tr(&p.name), p.price_yuan)}</option>
                    }).collect_view()}
                </select>
            </label>
            <button type="submit" class="btn-primary">{t("Create the order")}</button>
        </ActionForm>
    }
}
