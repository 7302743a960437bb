//! Keeps the widget's relocations at link time: `scripts/build-ui.sh` needs them to cut
//! the widget's engine into a module fetched on Start (`wasm-split-cli`).

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-bin=starling-widget=--emit-relocs");
    }
}
