//! The widget bundle: what a visitor of a site embedding Starling downloads.
//!
//! The card comes first and alone. The engine (the GPU, the transports, the protocol, the
//! wallet's key) sits behind a split point: `scripts/build-ui.sh` cuts everything only
//! [`engine_calls`] reaches into a module of its own, which the browser fetches when the
//! visitor presses Start. A visitor who never does downloads the card only.

#[cfg(target_arch = "wasm32")]
fn main() {
    starling_web_ui::mount_widget(load_engine);
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("The Starling widget runs in a browser: build it with `scripts/build-ui.sh`.");
}

/// Why the engine's module did not come (the browser's console has the details).
#[cfg(target_arch = "wasm32")]
struct NotFetched;

#[cfg(target_arch = "wasm32")]
impl From<leptos::wasm_split::SplitLoaderError> for NotFetched {
    fn from(_: leptos::wasm_split::SplitLoaderError) -> Self {
        NotFetched
    }
}

/// The split point: the only path from the card's code to the engine's.
#[cfg(target_arch = "wasm32")]
#[leptos::wasm_split::wasm_split(engine, fallible, wasm_split_path = ::leptos::wasm_split)]
fn engine_calls() -> Result<&'static starling_web_ui::EngineCalls, NotFetched> {
    Ok(&starling_web_ui::ENGINE_CALLS)
}

#[cfg(target_arch = "wasm32")]
fn load_engine(
) -> futures::future::LocalBoxFuture<'static, Result<&'static starling_web_ui::EngineCalls, String>>
{
    Box::pin(async {
        engine_calls()
            .await
            .map_err(|NotFetched| "the volunteer engine could not be fetched; try again".to_owned())
    })
}
