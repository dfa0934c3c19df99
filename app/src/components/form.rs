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

/// Which row a page-wide action was last submitted from (`row` of its input), kept after the
/// submission finishes, so that its outcome shows beside that row ([`RowMessage`]). None until a
/// submission from this page: a form posted without JavaScript comes back with its outcome but not
/// its row, and the page shows that one on top.
pub fn submitted_row<S>(action: ServerAction<S>, row: fn(&S) -> String) -> Signal<Option<String>>
where
    S: leptos::server_fn::ServerFn + Clone + Send + Sync + 'static,
    S::Output: Send + Sync + 'static,
    S::Error: Send + Sync + 'static,
{
    let last = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        if let Some(id) = action.input().with(|i| i.as_ref().map(row)) {
            last.set(Some(id));
        }
    });
    last.into()
}

/// An action's outcome beside the row `id`, when the last submission came from that row.
#[component]
pub fn RowMessage<T>(#[prop(into)] value: Signal<Option<Result<T, ServerFnError>>>, row: Signal<Option<String>>, id: String) -> impl IntoView
where
    T: Clone + Send + Sync + 'static + std::fmt::Display,
{
    let mine = Signal::derive(move || if row.with(|r| r.as_deref() == Some(id.as_str())) { value.get() } else { None });
    move || mine.with(Option::is_some).then(|| view! { <div class="col-span-full" data-testid="row-message"><ActionMessage value=mine /></div> })
}

/// An action's outcome on top of the page when no row of this page sent it (a post without
/// JavaScript).
#[component]
pub fn UnplacedMessage<T>(#[prop(into)] value: Signal<Option<Result<T, ServerFnError>>>, row: Signal<Option<String>>) -> impl IntoView
where
    T: Clone + Send + Sync + 'static + std::fmt::Display,
{
    let unplaced = Signal::derive(move || if row.with(Option::is_none) { value.get() } else { None });
    view! { <ActionMessage value=unplaced /> }
}
