//! Capture, filter, transform and apply of Kubernetes objects: the object half of a
//! Ferry migration (the volume half is the agents' job).
//!
//! The steps, each callable on its own so a transfer service can store and show what
//! lies between them:
//!
//! 1. [`capture`] reads an application (a namespace, optionally narrowed by a label
//!    selector and by resource types) from the source: every namespaced, listable type
//!    that discovery reports, built-in and custom, paged. What is left out is said, with
//!    why ([`Exclusion`]). The result, [`Captured`], is serializable.
//! 2. [`plan`] makes the objects portable and maps them to one destination (namespace,
//!    storage classes, zones, JSON patches, scale to zero, static PVs for restored
//!    volumes). It is pure: no cluster is contacted.
//! 3. [`preflight`] checks the destination: every cluster-scoped dependency exists and
//!    the user may write every kind; all problems at once, before anything is written.
//! 4. [`apply`] writes the plan in dependency order with server-side apply (field manager
//!    `ferry`), or dry-runs it, and returns one [`ObjectResult`] per object.
//! 5. [`activate`] starts workloads that arrived scaled to zero.
//!
//! Objects stay [`DynamicObject`](kube::api::DynamicObject)s with their
//! [`ApiResource`](kube::api::ApiResource), so custom resources travel like built-in
//! ones.

mod apply;
mod binding;
mod capture;
mod connect;
mod deps;
mod error;
mod facts;
mod plan;
mod portable;
mod preflight;
mod ratelimit;
pub mod resource;
mod restore_point;
mod types;

pub use apply::{ApplyOptions, ExistingPolicy, activate, apply};
pub use binding::{ClaimRefusal, check_claim_binding};
pub use capture::{
    CaptureSpec, Captured, CapturedObject, CapturedVolume, Exclusion, ExclusionReason,
    NamespaceMetadata, capture, types_present,
};
pub use connect::{BearerClientError, bearer_client, bearer_config, kube_config, who_am_i};
pub use deps::{Dependency, DependencyKind, dependencies_of};
pub use error::{Error, Result};
pub use plan::{
    PatchRule, Plan, PlannedObject, PlannedVolume, RestoredVolume, TransformSpec, plan,
};
pub use portable::{ServicePorts, make_portable, rename_namespace};
pub use preflight::{PreflightOptions, Subject, preflight, preflight_with};
pub use restore_point::{
    RESTORE_POINT_FORMAT, RestorePointManifest, UnsupportedFormat, VolumeSnapshot,
};
pub use types::{
    ActAs, Cluster, ClusterFacts, Credential, DestinationFacts, Diff, FIELD_MANAGER,
    LEGACY_ZONE_LABEL, MIGRATION_LABEL, ObjectRef, ObjectResult, Outcome, Problem, ProblemKind,
    REPLICAS_ANNOTATION, SUSPEND_ANNOTATION, Severity, StorageClassInfo, Summary, ZONE_LABEL,
};
