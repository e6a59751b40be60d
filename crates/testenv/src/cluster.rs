//! One Kubernetes cluster: its own etcd, kube-apiserver and kube-controller-manager.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bins::{Binaries, NodeBinaries, NodeImages};
use crate::certs::{CertFiles, write_cluster_certs};
use crate::error::{Error, Result};
use crate::node::{NodeInfo, NodeSetup};
use crate::ports::{free_port, is_listening};
use crate::process::{Lifetime, Proc};

/// The controllers that need no kubelet: enough for namespaces to terminate, owner
/// references to cascade, service-account tokens to appear and PVCs to bind to PVs.
const CONTROLLERS: &[&str] = &[
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
];

/// The users every cluster has besides its admin: plain users with no rights until a
/// test grants some with a Role.
pub const PLAIN_USERS: &[&str] = &["alice", "bob"];

/// A user of a cluster with a static bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub token: String,
    pub groups: Vec<String>,
}

/// Everything needed to reach one running cluster; serialised into the state file of a
/// detached environment so tests and tools can attach to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The cluster's name, also its admin context in the kubeconfig.
    pub name: String,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// PEM of the CA that signed the API server's certificate.
    pub ca_pem: String,
    /// The system:masters user; first in `users`.
    pub admin: User,
    /// Non-admin users (see [`PLAIN_USERS`]).
    pub users: Vec<User>,
    /// `http://127.0.0.1:<port>` of this cluster's etcd.
    pub etcd: String,
    /// Directory with the cluster's certificates, data and logs.
    pub dir: PathBuf,
    /// Its real nodes; empty in the API-only mode, where pods never run.
    #[serde(default)]
    pub nodes: Vec<NodeInfo>,
}

impl ClusterInfo {
    /// The kubeconfig context of `user` on this cluster: `<cluster>` for the admin,
    /// `<cluster>-<user>` for the others.
    pub fn context_for(&self, user: &str) -> String {
        if user == self.admin.name {
            self.name.clone()
        } else {
            format!("{}-{user}", self.name)
        }
    }

    pub fn user(&self, name: &str) -> Result<&User> {
        std::iter::once(&self.admin)
            .chain(&self.users)
            .find(|u| u.name == name)
            .ok_or_else(|| Error::Unknown {
                what: "user",
                name: name.to_owned(),
                known: std::iter::once(&self.admin)
                    .chain(&self.users)
                    .map(|u| u.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

pub(crate) struct RunningCluster {
    pub info: ClusterInfo,
    pub procs: Vec<Proc>,
    /// The nodes' processes, detached and stopped by the node teardown.
    pub node_pids: Vec<u32>,
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn s(v: impl Into<String>) -> String {
    v.into()
}

/// Waits until `ready()` holds, failing early if the process exits.
async fn wait_until<F, Fut>(proc: &mut Proc, timeout: Duration, mut ready: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        proc.check_running()?;
        if ready().await {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(proc.not_ready(timeout));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a cluster with real nodes needs besides the control plane's binaries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeParts<'a> {
    pub count: usize,
    pub bins: &'a NodeBinaries,
    pub images: &'a NodeImages,
}

pub(crate) async fn start_cluster(
    name: &str,
    dir: &Path,
    bins: &Binaries,
    nodes: Option<NodeParts<'_>>,
    lifetime: Lifetime,
) -> Result<RunningCluster> {
    std::fs::create_dir_all(dir.join("logs")).map_err(Error::io("creating", dir))?;

    // Nodes' networks come first: the API server listens on the first node's host
    // address, the one address both the host and every pod can reach.
    let mut node_infos = Vec::new();
    if let Some(parts) = nodes {
        for i in 0..parts.count {
            node_infos.push(crate::node::create_network(
                &format!("{name}-node{i}"),
                &dir.join(format!("nodes/node{i}")),
                &parts.bins.crictl,
            )?);
        }
    }
    let listen = node_infos
        .first()
        .map_or(std::net::Ipv4Addr::LOCALHOST, |n| n.host_ip);
    let extra_ips: Vec<_> = node_infos.first().map(|n| n.host_ip).into_iter().collect();
    let certs = write_cluster_certs(&dir.join("pki"), name, &extra_ips)?;

    let (etcd, etcd_url) = start_etcd(name, dir, bins, lifetime).await?;
    let (admin, users, tokens_file) = write_users(dir)?;
    let plane = ControlPlane {
        name,
        dir,
        bins,
        certs: &certs,
        lifetime,
        with_nodes: !node_infos.is_empty(),
    };
    let (mut apiserver, api_port) = plane
        .spawn_apiserver(&etcd_url, listen, &tokens_file)
        .await?;

    let info = ClusterInfo {
        name: name.to_owned(),
        server: format!("https://{listen}:{api_port}"),
        ca_pem: certs.ca_pem.clone(),
        admin: admin.clone(),
        users,
        etcd: etcd_url,
        dir: dir.to_owned(),
        nodes: node_infos.clone(),
    };

    let client = crate::kubeconfig::client_for(&info, &admin.name).await?;
    wait_until(&mut apiserver, Duration::from_secs(120), || {
        let client = client.clone();
        async move {
            let req = http::Request::get("/readyz").body(Vec::new());
            match req {
                Ok(req) => client
                    .request_text(req)
                    .await
                    .is_ok_and(|t| t.trim() == "ok"),
                Err(_) => false,
            }
        }
    })
    .await?;

    // kube-controller-manager (and the scheduler), as the admin: the bootstrap RBAC for
    // their own identities would only matter with per-controller service accounts,
    // which this does not use.
    let cm_kubeconfig = dir.join("controller-manager.kubeconfig");
    crate::kubeconfig::write(
        &cm_kubeconfig,
        std::slice::from_ref(&info),
        Some(&admin.name),
    )?;
    let cm = plane
        .start_controller_manager(&cm_kubeconfig, &client)
        .await?;

    let mut procs = vec![etcd, apiserver, cm];
    let mut node_pids = Vec::new();
    if let Some(parts) = nodes {
        procs.push(plane.spawn_scheduler(&cm_kubeconfig, parts.bins)?);
        let setup = NodeSetup {
            bins: parts.bins,
            kubeconfig: &cm_kubeconfig,
            images: &parts.images.tarballs,
            pause_image: &parts.images.pause,
        };
        for node in &node_infos {
            node_pids.extend(crate::node::start_runtime(node, &setup).await?);
        }
        crate::addons::wait_nodes_ready(&client, name, &node_infos, Duration::from_secs(120))
            .await?;
        crate::addons::install(&client, name, &node_infos, parts.images).await?;
    }

    Ok(RunningCluster {
        info,
        procs,
        node_pids,
    })
}

/// A port nobody listens on yet, for one of `dir`'s cluster's processes.
async fn port_for(dir: &Path) -> Result<u16> {
    free_port()
        .await
        .map_err(|e| Error::io("allocating a port for", dir)(e))
}

/// etcd on loopback, ready; returns it and its client URL.
async fn start_etcd(
    name: &str,
    dir: &Path,
    bins: &Binaries,
    lifetime: Lifetime,
) -> Result<(Proc, String)> {
    let etcd_client = port_for(dir).await?;
    let etcd_peer = port_for(dir).await?;
    let etcd_url = format!("http://127.0.0.1:{etcd_client}");
    let peer_url = format!("http://127.0.0.1:{etcd_peer}");
    let mut etcd = Proc::spawn(
        &format!("etcd ({name})"),
        &bins.etcd,
        &[
            s("--name=default"),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            s("--unsafe-no-fsync"),
            s("--log-level=warn"),
            s("--quota-backend-bytes=4294967296"),
        ],
        &[],
        &dir.join("logs/etcd.log"),
        lifetime,
    )?;
    wait_until(&mut etcd, Duration::from_secs(30), || async {
        is_listening(etcd_client)
    })
    .await?;
    Ok((etcd, etcd_url))
}

/// The administrator (in system:masters) and the plain users, each with a fresh token,
/// written as the API server's token file; returns them and the file.
fn write_users(dir: &Path) -> Result<(User, Vec<User>, PathBuf)> {
    let admin = User {
        name: s("admin"),
        token: random_token(),
        groups: vec![s("system:masters")],
    };
    let users: Vec<User> = PLAIN_USERS
        .iter()
        .map(|u| User {
            name: (*u).to_owned(),
            token: random_token(),
            groups: vec![s("ferry:testers")],
        })
        .collect();
    let tokens_csv: String = std::iter::once(&admin)
        .chain(&users)
        .enumerate()
        .map(|(i, u)| {
            format!(
                "{},{},{},\"{}\"\n",
                u.token,
                u.name,
                1000 + i,
                u.groups.join(",")
            )
        })
        .collect();
    let tokens_file = dir.join("pki/tokens.csv");
    std::fs::write(&tokens_file, tokens_csv).map_err(Error::io("writing", &tokens_file))?;
    Ok((admin, users, tokens_file))
}

/// What the control plane's processes of one cluster share.
struct ControlPlane<'a> {
    name: &'a str,
    dir: &'a Path,
    bins: &'a Binaries,
    certs: &'a CertFiles,
    lifetime: Lifetime,
    with_nodes: bool,
}

impl ControlPlane<'_> {
    /// kube-apiserver on `listen`, not yet ready; returns it and its port.
    async fn spawn_apiserver(
        &self,
        etcd_url: &str,
        listen: std::net::Ipv4Addr,
        tokens_file: &Path,
    ) -> Result<(Proc, u16)> {
        let (name, dir, certs) = (self.name, self.dir, self.certs);
        let api_port = port_for(dir).await?;
        let mut api_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--etcd-prefix=/registry-{name}"),
            format!("--bind-address={listen}"),
            format!("--advertise-address={listen}"),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", dir.join("pki").display()),
            format!("--tls-cert-file={}", certs.serving_cert.display()),
            format!("--tls-private-key-file={}", certs.serving_key.display()),
            format!("--client-ca-file={}", certs.ca_cert.display()),
            format!("--token-auth-file={}", tokens_file.display()),
            s("--authorization-mode=RBAC"),
            s("--service-cluster-ip-range=10.0.0.0/24"),
            s("--service-account-issuer=https://kubernetes.default.svc.cluster.local"),
            format!("--service-account-key-file={}", certs.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                certs.sa_key.display()
            ),
            s("--allow-privileged=true"),
            s("--enable-priority-and-fairness=false"),
            s("--profiling=false"),
            s("--v=1"),
        ];
        if self.with_nodes {
            // Logs, exec and port-forward reach the kubelet at the node's own address.
            api_args.push(s("--kubelet-preferred-address-types=InternalIP"));
            // Webhooks (Ferry's controller) are called at their pods' addresses, which
            // this host routes to, rather than at Service IPs, which only nodes'
            // kube-proxy knows.
            api_args.push(s("--enable-aggregator-routing=true"));
        }
        let apiserver = Proc::spawn(
            &format!("kube-apiserver ({name})"),
            &self.bins.kube_apiserver,
            &api_args,
            &[],
            &dir.join("logs/kube-apiserver.log"),
            self.lifetime,
        )?;
        Ok((apiserver, api_port))
    }

    /// kube-controller-manager, ready: the root CA publisher has done its first pass
    /// (kube-root-ca.crt exists in the default namespace).
    async fn start_controller_manager(
        &self,
        kubeconfig: &Path,
        client: &kube::Client,
    ) -> Result<Proc> {
        let (name, dir, certs) = (self.name, self.dir, self.certs);
        let mut cm = Proc::spawn(
            &format!("kube-controller-manager ({name})"),
            &self.bins.kube_controller_manager,
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                s("--leader-elect=false"),
                s("--secure-port=0"),
                // With nodes, every default controller (Deployments, StatefulSets,
                // endpoints, ...); without, only those that need no kubelet.
                format!(
                    "--controllers={}",
                    if self.with_nodes {
                        s("*")
                    } else {
                        CONTROLLERS.join(",")
                    }
                ),
                format!(
                    "--service-account-private-key-file={}",
                    certs.sa_key.display()
                ),
                format!("--root-ca-file={}", certs.ca_cert.display()),
                s("--use-service-account-credentials=false"),
                // Bind claims within a second of their volume appearing, not the default 15s.
                s("--pvclaimbinder-sync-period=1s"),
                s("--v=1"),
            ],
            &[],
            &dir.join("logs/kube-controller-manager.log"),
            self.lifetime,
        )?;
        wait_until(&mut cm, Duration::from_secs(60), || {
            let client = client.clone();
            async move {
                let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                    kube::Api::namespaced(client, "default");
                matches!(cms.get_opt("kube-root-ca.crt").await, Ok(Some(_)))
            }
        })
        .await?;
        Ok(cm)
    }

    /// kube-scheduler, for a cluster with nodes.
    fn spawn_scheduler(&self, kubeconfig: &Path, node_bins: &NodeBinaries) -> Result<Proc> {
        Proc::spawn(
            &format!("kube-scheduler ({})", self.name),
            &node_bins.kube_scheduler,
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                s("--leader-elect=false"),
                s("--secure-port=0"),
                s("--v=1"),
            ],
            &[],
            &self.dir.join("logs/kube-scheduler.log"),
            self.lifetime,
        )
    }
}
