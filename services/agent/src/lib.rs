//! Ferry's agent: the per-node data mover behind `ferry.v1.AgentService`.
//!
//! It backs a directory up into a repository, restores a snapshot into a directory and
//! verifies snapshots, streaming progress; it never decides what to move, only how.
//! Repositories are reached through profiles (see [`ferry_profile`]); requests may touch
//! only paths under the allowed roots.

pub mod config;
pub mod error;
pub mod ops;
pub mod server;
pub mod service;

pub use config::{AgentConfig, Args};
pub use error::AgentError;
pub use ferry_profile::{Profile, ProfileSource, S3Credentials};
/// The `ErrorDetail` a status carries (re-exported from ferry-rpc).
pub use ferry_rpc::detail as status_detail;
pub use server::{ServeError, serve};
pub use service::Agent;
