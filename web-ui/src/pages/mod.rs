//! One module per page.

pub mod volunteer;
