//! The production adapter: it turns the world into engine inputs and executes engine outputs.

pub mod driver;
pub mod transport;
