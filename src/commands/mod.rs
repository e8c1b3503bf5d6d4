//! The subcommands besides `serve` (which is `crate::serve`), one module
//! each: what `main` calls and what it prints. `token` is
//! `crate::auth::new_token`, two lines in `main`.

pub mod gc;
pub mod verify;
pub mod warm;
