//! Profile: how this cluster reaches a repository.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Condition, SecretKeyRef};

/// A repository profile in Ferry's catalog, as `ferry profile create` makes one: where
/// the repository is, the Secrets with its credentials and key (referenced, never
/// inlined), and what it is for. Only administrators may create one. The spec cannot
/// change after creation; deleting the object deletes the profile (the repository and
/// its restore points stay).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Profile",
    status = "ProfileStatus",
    shortname = "fprofile",
    category = "ferry",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.kind"}"#,
    printcolumn = r#"{"name":"Bucket","type":"string","jsonPath":".spec.bucket"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Repository","type":"string","jsonPath":".status.repositoryId","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSpec {
    /// What it is for.
    pub kind: RepositoryUse,
    /// What holds the repository; default `S3`.
    #[serde(default)]
    pub backend: Backend,
    /// S3 endpoint URL (`https://minio.example:9000`); empty: AWS's for the region.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// The bucket (or the directory, for `Local`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// S3 region.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// Secret with `access_key_id` and `secret_access_key`; absent: anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretKeyRef>,
    /// Verify the endpoint's TLS certificate (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_tls: Option<bool>,
    /// Secret with `key`, the key that wraps the repository's master key; absent on a
    /// `Migration` or `Export` profile that creates its repository: a key is generated
    /// into Secret `NAME-key` (back it up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_secret_ref: Option<SecretKeyRef>,
    /// Create the repository when the location holds none yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_repository: bool,
    /// `Export` profiles: the one application namespace the repository holds; exports of
    /// others through it are refused, and only a profile bound so has migration tokens
    /// issued (a token's key opens the whole repository).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bound_namespace: String,
    /// `Import` profiles: the Secret key holding the migration token the source issued
    /// (default key `token`); it fills backend, endpoint, bucket, prefix and region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_token_secret_ref: Option<SecretKeyRef>,
    /// With a migration token: the fingerprint (`SHA256:...`) of the source's signing
    /// key; a token signed by another key is refused. Required with a token unless
    /// `unsafeSkipSignerVerification` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expected_signer: String,
    /// With a migration token and no `expectedSigner`: accept the token whoever signed
    /// it (the status's profile names the signer).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsafe_skip_signer_verification: bool,
}

/// What a profile is for.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RepositoryUse {
    /// The staging area migrations pass volume data through.
    Migration,
    /// On a source: where exports write restore points.
    Export,
    /// On a destination: reads what another cluster exported.
    Import,
}

/// What holds a repository.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Backend {
    /// An S3-compatible object store.
    #[default]
    S3,
    /// A directory on the host (tests, single hosts).
    Local,
}

/// What became of a Profile.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (True once the catalog holds it), with the reason when not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The repository's id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repository_id: String,
    /// What the catalog said to act on (a generated key to back up, TLS unverified).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
