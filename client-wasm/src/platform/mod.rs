//! The platform seam: everything that differs between the browser and native builds.

#[cfg(target_arch = "wasm32")]
pub mod cpu_worker;
#[cfg(not(target_arch = "wasm32"))]
pub mod fault;
#[cfg(target_arch = "wasm32")]
pub mod keystore;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(target_arch = "wasm32")]
pub mod web;
