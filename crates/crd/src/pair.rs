//! ClusterPair: a pair with another cluster's Ferry.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Condition, SecretKeyRef};

/// A pair with another cluster's Ferry, made from the pairing token that cluster's
/// `ferry pair token` (CreatePairingToken) printed. Only administrators may create one.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "ClusterPair",
    status = "ClusterPairStatus",
    shortname = "fpair",
    category = "ferry",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Destination","type":"string","jsonPath":".status.destination"}"#,
    printcolumn = r#"{"name":"Pair ID","type":"string","jsonPath":".status.pairId","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPairSpec {
    /// The Secret holding the pairing token (never the token itself).
    pub token_secret_ref: SecretKeyRef,
}

/// What became of a ClusterPair.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPairStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (True once paired), with the reason when not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The pair's id, the same on both clusters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pair_id: String,
    /// The destination cluster's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination: String,
}
