//! One module per command.

pub mod logs;
pub mod run;
pub mod runs;
