//! Generated protobuf messages and gRPC clients/servers for Ferry's APIs.
//!
//! The sources are the `.proto` files under `proto/ferry/v1` at the top of the repository;
//! `build.rs` compiles them with `protox` (no system `protoc`) and generates the Rust code
//! with `tonic-prost-build`. Nothing here is hand-written beyond these re-exports.

/// Package `ferry.v1`: messages, enums, and for every service a `*_client` and a `*_server`
/// module.
pub mod v1 {
    tonic::include_proto!("ferry.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of every Ferry `.proto` file and its
/// imports, with source info, for gRPC server reflection (`tonic-reflection`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ferry_descriptor_set.bin"));
