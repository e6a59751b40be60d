//! Types shared by every step: object references, clusters, problems and results.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kube::api::{ApiResource, DynamicObject};
use serde::{Deserialize, Serialize};

/// The label Ferry puts on every object it creates, valued with the migration's id; it
/// is how a later run finds what it made (purge) and tells its own objects from others'.
pub const MIGRATION_LABEL: &str = "ferry.dev/migration";
/// Original `spec.replicas` of a workload that arrived scaled to zero.
pub const REPLICAS_ANNOTATION: &str = "ferry.dev/replicas";
/// Original `spec.suspend` of a CronJob or Job that arrived suspended.
pub const SUSPEND_ANNOTATION: &str = "ferry.dev/suspend";
/// The field manager of every server-side apply Ferry makes.
pub const FIELD_MANAGER: &str = "ferry";
/// The zone label of nodes and volumes.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The zone label of older clusters, still read.
pub const LEGACY_ZONE_LABEL: &str = "failure-domain.beta.kubernetes.io/zone";

/// A cluster a step talks to: a client and the name used in messages.
#[derive(Clone)]
pub struct Cluster {
    /// The cluster as users name it.
    pub name: String,
    pub client: kube::Client,
    /// Whose rights the client carries when they are not the user's own; absent means
    /// the user's.
    pub credential: Option<Credential>,
    /// How `client` was made, kept so the same connection can act as a user
    /// ([`Cluster::acting_as`]); absent for clients handed over ready-made.
    pub config: Option<kube::Config>,
    /// Set when `client` acts as a user (impersonation): the API server judges its
    /// writes as that user's, RBAC escalation and admission included.
    pub acting_for: Option<String>,
    /// Ferry's own client when `client` acts as a user: for the objects that are
    /// Ferry's and no user's (the PersistentVolumes it makes for restored data) and
    /// for reading what the user need not see to be checked (storage classes, CRDs).
    pub own: Option<kube::Client>,
}

/// The verified identity a client acts as: what the API server's impersonation headers
/// carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActAs {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// A credential of Ferry's own that a client writes with (a pair's ServiceAccount on
/// the destination): a right it lacks is then its to gain, not the user's, and
/// messages say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Who it is, e.g. "the credential of pair a-to-b".
    pub who: String,
    /// How it gains a right it lacks.
    pub grant: String,
}

impl Cluster {
    pub fn new(name: impl Into<String>, client: kube::Client) -> Self {
        Cluster {
            name: name.into(),
            client,
            credential: None,
            config: None,
            acting_for: None,
            own: None,
        }
    }

    /// The cluster reached through `config`, which is kept so the connection can later
    /// act as a user.
    pub fn from_config(
        name: impl Into<String>,
        config: kube::Config,
    ) -> std::result::Result<Self, kube::Error> {
        let client = kube::Client::try_from(config.clone())?;
        let mut cluster = Cluster::new(name, client);
        cluster.config = Some(config);
        Ok(cluster)
    }

    /// The same cluster, written as `who` (Kubernetes impersonation over this
    /// connection's credential): the API server's RBAC, its escalation check and its
    /// admission judge every write as theirs, not as Ferry's. Ferry's own client stays
    /// at hand in [`Cluster::own`]. Fails when the connection's configuration is not
    /// known (a client handed over ready-made), so nothing is written with more rights
    /// than the user's.
    pub fn acting_as(&self, who: &ActAs) -> crate::Result<Cluster> {
        let refused = |message: String| crate::Error::InvalidSpec {
            field: "cluster",
            message: format!(
                "cannot write on cluster {} as user {}: {message}",
                self.name, who.username
            ),
        };
        let mut config = self.config.clone().ok_or_else(|| {
            refused("its client was made without a configuration to act as a user with".into())
        })?;
        if who.username.is_empty() {
            return Err(refused("the job names no user".into()));
        }
        config.auth_info.impersonate = Some(who.username.clone());
        config.auth_info.impersonate_uid = Some(who.uid.clone()).filter(|u| !u.is_empty());
        config.auth_info.impersonate_groups = Some(who.groups.clone()).filter(|g| !g.is_empty());
        let client = kube::Client::try_from(config).map_err(|e| refused(e.to_string()))?;
        Ok(Cluster {
            name: self.name.clone(),
            client,
            // Ferry's credential still writes what is Ferry's; messages about those
            // name it.
            credential: self.credential.clone(),
            config: None,
            acting_for: Some(who.username.clone()),
            own: Some(self.ferry_client().clone()),
        })
    }

    /// The same cluster, written with `bearer`, a user's own credential for it, which
    /// its API server verifies: `who` is who it says that credential is
    /// ([`crate::who_am_i`]), for messages. Ferry's own client stays at hand in
    /// [`Cluster::own`].
    pub fn as_bearer(&self, bearer: &str, who: &str) -> crate::Result<Cluster> {
        let refused = |message: String| crate::Error::InvalidSpec {
            field: "cluster",
            message: format!(
                "cannot write on cluster {} with your credential: {message}",
                self.name
            ),
        };
        let mut config = self.config.clone().ok_or_else(|| {
            refused("its client was made without a configuration to reach it with".into())
        })?;
        config.auth_info = kube::config::AuthInfo {
            token: Some(bearer.to_owned().into()),
            ..Default::default()
        };
        let client = kube::Client::try_from(config).map_err(|e| refused(e.to_string()))?;
        Ok(Cluster {
            name: self.name.clone(),
            client,
            credential: self.credential.clone(),
            config: None,
            acting_for: Some(who.to_owned()).filter(|w| !w.is_empty()),
            own: Some(self.ferry_client().clone()),
        })
    }

    /// Ferry's own client here: [`Cluster::own`] when the cluster acts as a user, else
    /// its one client.
    pub fn ferry_client(&self) -> &kube::Client {
        self.own.as_ref().unwrap_or(&self.client)
    }

    /// The same cluster reached with `credential` rather than the user's rights.
    pub fn with_credential(mut self, credential: Credential) -> Self {
        self.credential = Some(credential);
        self
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("credential", &self.credential.as_ref().map(|c| &c.who))
            .field("acting_for", &self.acting_for)
            .finish()
    }
}

/// Names one object: enough to find it and to tell a user which one is meant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn new(ar: &ApiResource, namespace: Option<&str>, name: &str) -> Self {
        ObjectRef {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    pub fn of(ar: &ApiResource, obj: &DynamicObject) -> Self {
        ObjectRef::new(
            ar,
            obj.metadata.namespace.as_deref(),
            obj.metadata.name.as_deref().unwrap_or_default(),
        )
    }

    /// The API group (empty for the core group).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or_default()
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = self.group();
        if group.is_empty() {
            write!(f, "{}", self.kind)?;
        } else {
            write!(f, "{}.{group}", self.kind)?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " {ns}/{}", self.name),
            None => write!(f, " {}", self.name),
        }
    }
}

/// One StorageClass as far as a migration cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageClassInfo {
    pub name: String,
    pub provisioner: String,
    pub is_default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_binding_mode: Option<String>,
}

/// What a migration needs to know about a cluster besides its objects: the zones where
/// workers run and the storage classes. Gathered on the source during capture and on
/// the destination before planning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// Zones with at least one schedulable worker node.
    pub zones: BTreeSet<String>,
    pub storage_classes: BTreeMap<String, StorageClassInfo>,
    /// Facts that could not be read (e.g. no right to list nodes), said plainly so a
    /// plan built on them can say why it guessed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
}

/// The destination's facts, as `plan` takes them.
pub type DestinationFacts = ClusterFacts;

impl ClusterFacts {
    /// The default storage class, if exactly one is marked so.
    pub fn default_storage_class(&self) -> Option<&str> {
        let mut defaults = self.storage_classes.values().filter(|s| s.is_default);
        match (defaults.next(), defaults.next()) {
            (Some(one), None) => Some(one.name.as_str()),
            _ => None,
        }
    }
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing; the migration can go on.
    Warning,
    /// The migration must not start until it is fixed.
    Error,
}

/// What kind of problem it is, for callers that react to some kinds (e.g. offer to
/// install a missing CRD) without parsing messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProblemKind {
    /// A cluster-scoped object or API the application depends on is not on the
    /// destination. `kind` is e.g. "CustomResourceDefinition", "StorageClass".
    MissingDependency { kind: String, name: String },
    /// The destination user may not do something the apply needs.
    Forbidden {
        verb: String,
        group: String,
        resource: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
    },
    /// Something could not be checked (e.g. no right to read StorageClasses).
    CannotVerify,
    /// A transform could not be applied to an object.
    Transform,
    /// No zone could be chosen for a volume.
    Zone,
    /// The target namespace is being deleted on the destination.
    NamespaceTerminating,
    /// The plan leaves something behind on purpose (e.g. a DaemonSet that cannot be
    /// scaled to zero).
    NotSupported,
}

/// One thing wrong with a plan or a destination, found before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub severity: Severity,
    pub kind: ProblemKind,
    /// The object concerned, if it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl Problem {
    pub fn error(kind: ProblemKind, object: Option<ObjectRef>, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Error,
            kind,
            object,
            message: message.into(),
        }
    }

    pub fn warning(
        kind: ProblemKind,
        object: Option<ObjectRef>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            severity: Severity::Warning,
            kind,
            object,
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        match &self.object {
            Some(o) => write!(f, "{level}: {o}: {}", self.message),
            None => write!(f, "{level}: {}", self.message),
        }
    }
}

/// What happened to one object in an apply, purge or activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The object did not exist and was created (or would be, in a dry run).
    Created,
    /// The object existed and was changed (or would be).
    Updated,
    /// The object existed and already matched.
    Unchanged,
    /// The object was deleted by a purge (or would be).
    Deleted,
    /// Left alone on purpose.
    Skipped { reason: String },
    /// Could not be written; the rest of the apply went on.
    Failed {
        reason: String,
        /// The API server's HTTP status, when it answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
    },
}

/// The before and after of one object, for a dry run's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// The object on the destination now (absent: it does not exist).
    pub before: Option<serde_json::Value>,
    /// The object as it would be (absent: it would be deleted).
    pub after: Option<serde_json::Value>,
    /// RFC 6902 operations from `before` to `after` (server-managed fields left out).
    pub patch: json_patch::Patch,
}

/// The result for one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectResult {
    pub object: ObjectRef,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Whether this was a dry run: nothing was written.
    pub dry_run: bool,
    /// In a dry run, what would change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Diff>,
}

impl ObjectResult {
    pub fn is_failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }
}

/// Counts of outcomes, for a job report's headline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub skipped: usize,
    pub failed: usize,
}

impl Summary {
    pub fn of(results: &[ObjectResult]) -> Self {
        let mut s = Summary::default();
        for r in results {
            match r.outcome {
                Outcome::Created => s.created += 1,
                Outcome::Updated => s.updated += 1,
                Outcome::Unchanged => s.unchanged += 1,
                Outcome::Deleted => s.deleted += 1,
                Outcome::Skipped { .. } => s.skipped += 1,
                Outcome::Failed { .. } => s.failed += 1,
            }
        }
        s
    }

    /// True only when nothing failed: a partial failure is never a success.
    pub fn succeeded(&self) -> bool {
        self.failed == 0
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} created, {} updated, {} unchanged, {} deleted, {} skipped, {} failed",
            self.created, self.updated, self.unchanged, self.deleted, self.skipped, self.failed
        )
    }
}
