//! The app bundle: the volunteer page, the console and the network page.

#[cfg(target_arch = "wasm32")]
fn main() {
    starling_web_ui::mount_app();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("The Starling web UI runs in a browser: build it with `scripts/build-ui.sh`.");
}
