//! The sparse index: path parsing, the cache of index files, their persistence
//! and the reading of individual index lines.

pub mod cache;
pub mod lines;
pub mod path;
pub mod store;
