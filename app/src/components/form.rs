//! Small form pieces shared by every page, so fields and messages look and behave the same.

use crate::i18n::t;
use leptos::prelude::*;

#[component]
pub fn Field(
    label: &'static str,
    name: &'static str,
    #[prop(default = "text")] kind: &'static str,
    #[prop(optional)] autocomplete: &'static str,
    #[prop(optional)] placeholder: &'static str,
    #[prop(optional)] hint: &'static str,
    #[prop(default = true)] required: bool,
    #[prop(optional, into)] value: String,
) -> impl IntoView {
    let hint_id = format!("{name}-hint");
    view! {
        <div>
            <label class="block">
                <span class="text-sm font-medium text-slate-700 dark:text-slate-300">{label}</span>
                <input
                    type=kind
                    name=name
                    value=value
                    required=required
                    autocomplete=autocomplete
                    placeholder=placeholder
                    aria-describedby=(!hint.is_empty()).then(|| hint_id.clone())
                    class="input mt-1"
                />
            </label>
            {(!hint.is_empty()).then(|| view! { <p id=hint_id class="mt-1 text-xs text-slate-500">{hint}</p> })}
        </div>
    }
}

/// Shows the outcome of the last submission of a server action: an error in red, or a success
/// message in green when the action returns one.
#[component]
pub fn ActionMessage<T>(#[prop(into)] value: Signal<Option<Result<T, ServerFnError>>>) -> impl IntoView
where
    T: Clone + Send + Sync + 'static + std::fmt::Display,
{
    move || {
        value.get().map(|result| match result {
            Ok(ok) => {
                let text = ok.to_string();
                (!text.is_empty()).then(|| view! { <p role="status" class="alert-ok">{text}</p> }.into_any())
            }
            Err(e) => Some(view! { <p role="alert" class="alert-error">{crate::api::error_text(&e)}</p> }.into_any()),
        })
    }
}

/// For actions that return nothing on success (they redirect instead).
#[component]
pub fn ActionError(#[prop(into)] value: Signal<Option<Result<(), ServerFnError>>>) -> impl IntoView {
    move || {
        value.get().and_then(|r| r.err()).map(|e| view! { <p role="alert" class="alert-error">{crate::api::error_text(&e)}</p> })
    }
}

#[component]
pub fn SubmitButton(label: &'static str, #[prop(into)] pending: Signal<bool>) -> impl IntoView {
    view! {
        <button type="submit" class="btn-primary w-full" disabled=move || pending.get()>
            {move || if pending.get() { t("Please wait…") } else { label }}
        </button>
    }
}

/// Counts an action's successful submissions. A page whose data reloads on this (rather than on
/// every submission) keeps what the user typed when a submission fails.
pub fn successes<T>(value: impl Get<Value = Option<Result<T, ServerFnError>>> + Send + Sync + 'static) -> ReadSignal<usize>
where
    T: Send + Sync + 'static,
{
    let count = RwSignal::new(0usize);
    Effect::new(move |_| {
        if matches!(value.get(), Some(Ok(_))) {
            count.update(|c| *c += 1);
        }
    });
    count.read_only()
}
