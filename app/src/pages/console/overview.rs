use crate::api::account::overview;
use crate::pages::admin::LoadError;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Overview() -> impl IntoView {
    let data = Resource::new(|| (), |_| overview());
    view! {
        <Title text="Overview" />
        <h1 class="page-title">"Overview"</h1>
        <Suspense fallback=|| view! { <p class="mt-6 text-slate-500">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Err(e) => view! { <LoadError error=e /> }.into_any(),
                    Ok(o) => view! {
                        <section class="card mt-6">
                            <h2 class="section-title">"Get started"</h2>
                            <ol class="mt-3 list-decimal space-y-2 pl-5 text-sm text-slate-700 dark:text-slate-300">
                                <li><a class="link" href="/console/keys">"Create an API key"</a>" and pick its channel."</li>
                                <li>"Point your SDK or Claude Code at CloudRouter:"</li>
                            </ol>
                            <pre class="mt-3 overflow-x-auto rounded-lg bg-slate-900 p-4 text-xs text-slate-100"><code>{format!(
                                "export ANTHROPIC_BASE_URL={}\nexport ANTHROPIC_API_KEY=<your CloudRouter key>", o.base_url
                            )}</code></pre>
                        </section>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}
