//! Generated protobuf messages and gRPC clients/servers for Ferry's APIs.
//!
//! The sources are the `.proto` files under `proto/ferry/v1` at the top of the repository;
//! `build.rs` compiles them with `protox` (no system `protoc`) and generates the Rust code
//! with `tonic-prost-build`. Nothing here is hand-written beyond these re-exports.

/// Package `ferry.v1`: messages, enums, and for every service a `*_client` and a `*_server`
/// module.
pub mod v1 {
    tonic::include_proto!("ferry.v1");

    // Credentials are redacted; everything else prints.
    impl std::fmt::Debug for S3Credentials {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("S3Credentials")
                .field("region", &self.region)
                .field("access_key_id", &self.access_key_id)
                .field("secret_access_key", &"<redacted>")
                .finish_non_exhaustive()
        }
    }

    impl std::fmt::Debug for ResolveProfileResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ResolveProfileResponse")
                .field("profile", &self.profile)
                .field("repository", &self.repository)
                .field("s3", &self.s3)
                .field("key", &"<redacted>")
                .field("verify_tls", &self.verify_tls)
                .field("repository_id", &self.repository_id)
                .finish()
        }
    }

    impl std::fmt::Debug for ResolvePairResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ResolvePairResponse")
                .field("pair", &self.pair)
                .field("destination_bearer_token", &"<redacted>")
                .finish_non_exhaustive()
        }
    }
}

/// Request metadata carrying the caller's own credential for a job's destination
/// cluster (`Bearer <token>`), sent with StartMigration and StartRestore: the
/// destination verifies it, and the job writes there with it.
pub const DESTINATION_AUTHORIZATION: &str = "ferry-destination-authorization";

/// The encoded `google.protobuf.FileDescriptorSet` of every Ferry `.proto` file and its
/// imports, with source info, for gRPC server reflection (`tonic-reflection`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ferry_descriptor_set.bin"));
