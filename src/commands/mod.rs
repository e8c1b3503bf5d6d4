//! The subcommands besides `serve` (which is `crate::serve`), one module
//! each: what `main` calls and what it prints. `token` is
//! `crate::auth::new_token`, two lines in `main`.

pub mod export;
pub mod gc;
pub mod import;
mod progress;
pub mod verify;
pub mod warm;
