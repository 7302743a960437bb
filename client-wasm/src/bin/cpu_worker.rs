//! `starling-cpu-worker`: the browser's CPU fallback as a dedicated Web Worker (see
//! `starling_client::platform::cpu_worker`). Trunk builds it for wasm32; natively it is
//! an empty program.

#[cfg(target_arch = "wasm32")]
fn main() {
    if let Err(why) = starling_client::platform::cpu_worker::serve() {
        web_sys::console::error_1(&why.into());
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {}
