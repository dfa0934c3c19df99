//! CloudRouter's console: Leptos pages, components and the server functions behind them.
//! Built twice: for the server (`ssr`, rendering and server functions) and for the browser
//! (`hydrate`, wasm). Domain rules live in `cloudrouter-core`; this crate only calls them.

pub mod api;
pub mod app;
pub mod components;
#[cfg(feature = "ssr")]
pub mod core_words;
pub mod i18n;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod ssr;

pub use app::{shell, App};

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}
