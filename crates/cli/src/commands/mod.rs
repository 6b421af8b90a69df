//! One module per command.

pub mod component;
pub mod initializer;
pub mod job;
pub mod kpi;
pub mod logs;
pub mod operator;
pub mod remote;
pub mod run;
pub mod runs;
pub mod server;
