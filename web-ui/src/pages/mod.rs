//! One module per page.

pub mod console;
pub mod network;
pub mod volunteer;
pub mod widget;
