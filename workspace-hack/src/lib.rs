//! No code: a dependency of `cdnet-host`, `cdnet-edge` and `xtask` that enables, on each shared
//! third-party crate, the union of the features those three need.
//!
//! Cargo resolves features per command: `cargo build -p cdnet-edge` alone turns on fewer features
//! of, say, `libc` or `smallvec` than `cargo build -p cdnet-edge -p cdnet-host`, and a crate built
//! with other features is a different artifact, so each README and xtask command used to recompile
//! tract (and burn) for itself. With every member depending on this crate, every command sees the
//! same features and reuses what an earlier one built (the "workspace-hack" pattern of rustc and
//! cargo-hakari; Cargo's own `resolver.feature-unification = "workspace"` is still unstable).
//! `tests/tests/architecture.rs` checks that the selections agree and prints what to change here
//! when they do not.
