//! Helpers shared by this crate's GPU tests and benchmarks (`mod support;` in each).

pub mod gpu;
#[allow(dead_code)] // only the render test and benchmark use it
pub mod render_divergence;
