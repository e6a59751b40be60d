//! Real clusters and a real S3 server for Ferry's tests.
//!
//! [`shared()`] starts, once per test binary, two clusters (`a` and `b`), each an etcd, a
//! kube-apiserver with RBAC and static-token users, and a kube-controller-manager running
//! the controllers that need no kubelet, plus MinIO with a fresh bucket and a read-only
//! user on it ([`S3Info::readonly`]). Every process dies with the test process. Tests
//! isolate themselves with [`unique_name`] namespaces and bucket prefixes.
//!
//! The binaries are built from their Go modules by `scripts/build-testenv.sh`
//! (`make testenv`) into `~/.cache/ferry/testenv`, keyed by the versions in
//! `versions.env`.

pub mod addons;
mod bins;
mod certs;
mod cluster;
mod data;
mod env;
mod error;
pub mod kubeconfig;
pub mod node;
mod ports;
pub mod process;
mod s3;
pub mod tls;
mod wait;

pub use bins::{
    Binaries, NODE_PACKAGES, NodeBinaries, NodeImages, Versions, cache_root, grpcurl, helm, mc,
    run_grpcurl, snapshot_crds,
};
pub use cluster::{ClusterInfo, PLAIN_USERS, User};
pub use data::random_bytes;
pub use env::{
    EnvSpec, EnvState, TestEnv, shared, shared_across_versions, shared_with_nodes, stop_nodes,
    unique_name, versions,
};
pub use error::{Error, Result};
pub use node::NodeInfo;
pub use ports::is_listening;
pub use process::Lifetime;
pub use s3::{READONLY_USER, S3Credentials, S3Info};
pub use wait::eventually;
