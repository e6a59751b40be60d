//! Ferry's custom resources, group `ferry.dev`, version `v1alpha1`.
//!
//! They are a Kubernetes-native front end to the same gRPC services the `ferry` command
//! drives: the controller (services/controller) turns each object into the matching
//! call and writes what happened into its status. The CustomResourceDefinitions the
//! chart ships (`charts/ferry/crds/`) are generated from these types by [`all_yaml`];
//! a test keeps the two equal.
//!
//! - [`ClusterPair`] (cluster-scoped): accept a pairing token from the destination.
//! - [`Profile`] (cluster-scoped): how this cluster reaches a repository;
//!   administrators only.
//! - [`Migration`] (namespaced): move namespaces through a pair, once.
//! - [`Restore`] (namespaced): put a restore point back, here or on a pair's
//!   destination, once.
//! - [`MigrationSchedule`] (namespaced): a Migration on a schedule, through the
//!   scheduler service; its status keeps the latest runs.
//! - [`ImportPolicy`] (namespaced, on the destination): import, and optionally
//!   restore, what is new in an import profile's repository, on a schedule.
//!
//! Who asked matters: the controller acts for the user who created an object, never
//! with more rights. The admission webhook records that user in [`requester`]'s
//! annotations when the object is created, and keeps them as they were on every update.

mod common;
mod import_policy;
mod migration;
mod pair;
mod profile;
pub mod requester;
mod restore;
mod schedule;

use kube::CustomResourceExt;

pub use common::{Condition, SecretKeyRef, set_condition};
pub use import_policy::{ImportPolicy, ImportPolicySpec};
pub use migration::{
    ApplySpec, CUTOVER_ANNOTATION, ExistingObjects, JobStatus, Migration, MigrationSpec,
    MigrationStatus, MoverSpec, ObjectCounts, ObjectFailure, Phase, Progress, Selection,
    VolumeSpec, VolumeStatus, WarmSpec, WarmState,
};
pub use pair::{ClusterPair, ClusterPairSpec, ClusterPairStatus};
pub use profile::{Backend, Profile, ProfileSpec, ProfileStatus, RepositoryUse};
pub use restore::{Restore, RestoreSpec};
pub use schedule::{
    MigrationSchedule, MigrationScheduleSpec, MigrationScheduleStatus, RetentionSpec,
    ScheduleRunStatus, Timing, parse_duration,
};

/// The API group of every Ferry resource.
pub const GROUP: &str = "ferry.dev";
/// Its version.
pub const VERSION: &str = "v1alpha1";
/// The finalizer the controller puts on objects whose deletion must undo or stop
/// something first (a running Migration's job, a pair's other half).
pub const FINALIZER: &str = "ferry.dev/controller";

/// Every Ferry CRD, with the rules the derive cannot express added.
pub fn all() -> Vec<Crd> {
    let mut pair = ClusterPair::crd();
    spec_rule(
        &mut pair,
        "self == oldSelf",
        "the spec of a ClusterPair cannot change; delete it and create another",
    );
    let mut profile = Profile::crd();
    spec_rule(
        &mut profile,
        "self == oldSelf",
        "the spec of a Profile cannot change; delete it and create another",
    );
    let mut migration = Migration::crd();
    // A Migration runs once, as its creator asked: its spec never changes after.
    spec_rule(
        &mut migration,
        "self == oldSelf",
        "the spec of a Migration cannot change; create another Migration",
    );
    let mut restore = Restore::crd();
    spec_rule(
        &mut restore,
        "self == oldSelf",
        "the spec of a Restore cannot change; create another Restore",
    );
    let mut schedule = MigrationSchedule::crd();
    spec_rule(
        &mut schedule,
        &schedule::only_suspend_changes(),
        "only spec.suspend of a MigrationSchedule can change; delete it and create another",
    );
    spec_rule(
        &mut schedule,
        "has(self.schedule) != has(self.interval)",
        "set exactly one of spec.schedule (a cron expression) and spec.interval",
    );
    let mut import = ImportPolicy::crd();
    spec_rule(
        &mut import,
        &import_policy::only_suspend_changes(),
        "only spec.suspend of an ImportPolicy can change; delete it and create another",
    );
    spec_rule(
        &mut import,
        "has(self.schedule) != has(self.interval)",
        "set exactly one of spec.schedule (a cron expression) and spec.interval",
    );
    vec![pair, profile, migration, restore, schedule, import]
}

type Crd =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Adds the CEL `rule` (with `message` when it fails) to the spec of every version.
fn spec_rule(crd: &mut Crd, rule: &str, message: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
    for version in &mut crd.spec.versions {
        let spec = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"));
        if let Some(spec) = spec {
            spec.x_kubernetes_validations
                .get_or_insert_with(Vec::new)
                .push(ValidationRule {
                    rule: rule.into(),
                    message: Some(message.into()),
                    ..ValidationRule::default()
                });
        }
    }
}

/// [`all`] as the YAML the chart ships in `crds/`.
pub fn all_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::from(
        "# Generated from crates/crd by `ferry crds`; do not edit. Regenerate with\n\
         #   cargo run -q -p ferry-cli --bin ferry -- crds > charts/ferry/crds/ferry.dev.yaml\n",
    );
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_ships_the_crds_these_types_make() {
        let shipped = include_str!("../../../charts/ferry/crds/ferry.dev.yaml");
        let made = all_yaml().expect("CRDs serialize");
        assert!(
            shipped == made,
            "charts/ferry/crds/ferry.dev.yaml is out of date; regenerate it with\n  \
             cargo run -q -p ferry-cli --bin ferry -- crds > charts/ferry/crds/ferry.dev.yaml"
        );
    }

    #[test]
    fn a_migration_reads_from_the_yaml_users_write() {
        let m: Migration = serde_yaml_ng::from_str(
            "apiVersion: ferry.dev/v1alpha1\n\
             kind: Migration\n\
             metadata: {name: shop-to-b, namespace: shop}\n\
             spec:\n  clusterPair: a-to-b\n  existingObjects: Update\n  \
             storageClassMapping: {fast: standard}\n",
        )
        .expect("parses");
        assert_eq!(m.spec.cluster_pair, "a-to-b");
        assert_eq!(m.spec.apply.existing_objects, ExistingObjects::Update);
        assert_eq!(m.spec.apply.storage_class_mapping["fast"], "standard");
        assert_eq!(m.spec.apply.start_applications, None);
    }
}
