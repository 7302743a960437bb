//! The platform seam: the one place that differs between the browser and native builds.
//! Everything above it is platform-free; [`RelayTransport`] names the data channel to the
//! relay on each side (the browser's `RTCPeerConnection`, or the `webrtc` crate's through
//! `starling-webrtc-native`, each falling back to the relay's WebSocket), both with
//! `connect(base_url)` and `connect_with(base_url, TransportChoice)`; and the device's clock
//! and memory (`now_ms`, `remembered`, `remember`).

#[cfg(target_arch = "wasm32")]
pub mod cpu_worker;
#[cfg(target_arch = "wasm32")]
pub mod keystore;

cfg_if::cfg_if! {
    if #[cfg(target_arch = "wasm32")] {
        pub mod web;
        pub mod web_ice;
        pub mod web_socket;
        pub use web_socket::WebRelay as RelayTransport;
        pub use web::{now_ms, remember, remembered};
    } else {
        pub mod native;
        pub use native::NativeTransport as RelayTransport;
        pub use native::{now_ms, remember, remembered};
    }
}
