//! The widget bundle: what a visitor of a site embedding Starling downloads.

#[cfg(target_arch = "wasm32")]
fn main() {
    starling_web_ui::mount_widget();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("The Starling widget runs in a browser: build it with `scripts/build-ui.sh`.");
}
