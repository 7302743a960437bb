//! Starling's web app: mounts the Leptos UI. It runs only in browsers (built by Trunk);
//! the native build is an empty shell so that `cargo build --workspace` stays green.
//!
//! - `app`: the router (path switch with `history.pushState`) and the header nav.
//! - `pages`: one module per page (volunteer, console, network, widget).
//! - `runtime`: the volunteer engine, its pacing (intensity, pause, hidden tab, battery).
//! - `form`: the console's form generated from a kernel's JSON Schema.
//! - `tiles`: where a render job's units sit in its image (the console's tile map).
//! - `net`: the relay's REST API over `fetch`, and browser storage.

#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(any(target_arch = "wasm32", test))]
mod form;
#[cfg(target_arch = "wasm32")]
mod net;
#[cfg(target_arch = "wasm32")]
mod pages;
#[cfg(target_arch = "wasm32")]
mod runtime;
#[cfg(any(target_arch = "wasm32", test))]
mod tiles;

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("The Starling web UI runs in a browser: build it with `scripts/build-ui.sh`.");
}
