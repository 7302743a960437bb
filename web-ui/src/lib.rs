//! Starling's web app, in two bundles: the app (volunteer page, console, network page)
//! and the widget that other sites embed, which a visitor downloads alone: it leaves out
//! the console, its forms and the network page. Both run only in browsers (built by
//! `scripts/build-ui.sh`); the native build is an empty shell so that `cargo build
//! --workspace` stays green.
//!
//! - `app`: the router (path switch with `history.pushState`) and the header nav.
//! - `pages`: one module per page (volunteer, console, network, widget).
//! - `runtime`: the volunteer engine, its pacing (intensity, pause, hidden tab, battery,
//!   and whether the widget's frame is visible).
//! - `consent`: the widget's remembered yes per site, which lapses after 30 days.
//! - `form`: the console's form generated from a kernel's JSON Schema.
//! - `tiles`: where a render job's units sit in its image (the console's tile map).
//! - `net`: the relay's REST API over `fetch`, and browser storage.
//! - `charts`: small hand-drawn SVG line charts.
//! - `words`: how the volunteer page says things (the work, credit amounts, the day).

#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(any(target_arch = "wasm32", test))]
mod charts;
#[cfg(any(target_arch = "wasm32", test))]
mod consent;
#[cfg(any(target_arch = "wasm32", test))]
mod form;
#[cfg(target_arch = "wasm32")]
mod net;
#[cfg(target_arch = "wasm32")]
mod pages;
#[cfg(target_arch = "wasm32")]
mod runtime;

#[cfg(target_arch = "wasm32")]
pub use runtime::{EngineCalls, EngineLoader, ENGINE_CALLS};
#[cfg(any(target_arch = "wasm32", test))]
mod tiles;
#[cfg(any(target_arch = "wasm32", test))]
mod words;

/// Mounts the whole app on the page's body.
#[cfg(target_arch = "wasm32")]
pub fn mount_app() {
    console_error_panic_hook::set_once();
    runtime::allow_cpu_on_page(starling_client::CPU_REFERENCE);
    runtime::allow_custom_kernels(starling_client::CUSTOM_KERNELS);
    runtime::allow_matmul_trials(starling_client::MATMUL_TRIALS);
    runtime::set_engine_loader(|| Box::pin(async { Ok(&ENGINE_CALLS) }));
    leptos::mount::mount_to_body(app::App);
}

/// Mounts the widget alone on the page's body (`/widget` inside another site's frame),
/// reaching the engine through `load_engine` when its visitor presses Start.
#[cfg(target_arch = "wasm32")]
pub fn mount_widget(load_engine: EngineLoader) {
    use leptos::prelude::*;
    console_error_panic_hook::set_once();
    runtime::set_engine_loader(load_engine);
    leptos::mount::mount_to_body(|| {
        // A widget session never starts itself: the visitor presses Start.
        provide_context(pages::volunteer::Session::new(true));
        view! { <pages::widget::WidgetPage /> }
    });
}
