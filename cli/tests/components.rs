//! Ferry as the Helm chart runs it, without the chart: on each cluster the pairing
//! service, the catalog, the transfer service, the scheduler, an agent and the gateway
//! as six separate processes (`ferry service <component>`, the code of each
//! component's own binary), talking to each other only over gRPC with the deployment's
//! internal credential. A migration goes through them from a to b: the source's
//! transfer resolves the pair through its pairing service and the profile through its
//! catalog, and reaches b's agent through b's gateway and agent relay.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::control::{
    assert_sample_app_on_b, cli, eventually, free_port, grpcurl, kubectl, migrate,
    profiles_and_pair, sample_app,
};
use common::make_tree;

/// One component's process, killed when the test ends however it ends.
struct Component {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for Component {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Component {
    fn log(&self) -> String {
        format!(
            "--- {} ---\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

/// The ports and files of one cluster's Ferry.
struct Side {
    name: &'static str,
    kubeconfig: PathBuf,
    token: PathBuf,
    data: PathBuf,
    pairing: u16,
    catalog: u16,
    transfer: u16,
    scheduler: u16,
    agent: u16,
    gateway: u16,
}

impl Side {
    fn new(name: &'static str, shared_kubeconfig: &Path, root: &Path) -> Side {
        // Each side's components see their own cluster as the current context, as pods
        // see theirs through the in-cluster configuration.
        let kubeconfig = root.join(format!("kubeconfig-{name}"));
        std::fs::copy(shared_kubeconfig, &kubeconfig).unwrap();
        kubectl(&kubeconfig, name, &["config", "use-context", name], None);
        // Each deployment has its own internal credential.
        let token = root.join(format!("internal-{name}"));
        std::fs::write(
            &token,
            format!("{name}-internal-credential-{}", "x".repeat(40)),
        )
        .unwrap();
        Side {
            name,
            kubeconfig,
            token,
            data: root.join(format!("data-{name}")),
            pairing: free_port(),
            catalog: free_port(),
            transfer: free_port(),
            scheduler: free_port(),
            agent: free_port(),
            gateway: free_port(),
        }
    }

    fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }

    fn spawn(&self, root: &Path, component: &str, port: u16, args: &[String]) -> Component {
        let log = root.join(format!("{}-{component}.log", self.name));
        let data = self.data.join(component);
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args([
            "service",
            component,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]);
        if component != "gateway" {
            cmd.arg("--internal-token-file").arg(&self.token);
        }
        if !matches!(component, "gateway" | "agent") {
            cmd.arg("--data-dir").arg(&data);
            cmd.args(["--cluster-name", self.name]);
        }
        let child = cmd
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Component {
            name: format!("{} {component}", self.name),
            child,
            log,
        }
    }

    /// The six processes of this side's Ferry.
    fn start(&self, root: &Path) -> Vec<Component> {
        let url = Side::url;
        let volumes = root.join(format!("volumes-{}", self.name));
        vec![
            self.spawn(
                root,
                "pairing",
                self.pairing,
                &[
                    "--ferry-endpoint".into(),
                    format!("127.0.0.1:{}", self.gateway),
                ],
            ),
            self.spawn(root, "catalog", self.catalog, &[]),
            self.spawn(
                root,
                "transfer",
                self.transfer,
                &[
                    "--pairing-endpoint".into(),
                    url(self.pairing),
                    "--catalog-endpoint".into(),
                    url(self.catalog),
                    "--agent".into(),
                    format!("local={}", url(self.agent)),
                    "--volume-root".into(),
                    volumes.display().to_string(),
                    "--shutdown-grace-seconds".into(),
                    "2".into(),
                ],
            ),
            self.spawn(
                root,
                "scheduler",
                self.scheduler,
                &[
                    "--transfer-endpoint".into(),
                    url(self.transfer),
                    "--catalog-endpoint".into(),
                    url(self.catalog),
                ],
            ),
            self.spawn(
                root,
                "agent",
                self.agent,
                &[
                    "--node-name".into(),
                    format!("node-{}", self.name),
                    "--catalog-endpoint".into(),
                    url(self.catalog),
                    "--allow-root".into(),
                    root.display().to_string(),
                    "--volume-root".into(),
                    volumes.display().to_string(),
                ],
            ),
            self.spawn(
                root,
                "gateway",
                self.gateway,
                &[
                    "--pairing-endpoint".into(),
                    url(self.pairing),
                    "--catalog-endpoint".into(),
                    url(self.catalog),
                    "--transfer-endpoint".into(),
                    url(self.transfer),
                    "--scheduler-endpoint".into(),
                    url(self.scheduler),
                ],
            ),
        ]
    }

    /// What the chart publishes: the gateway's address, where the `ferry` command
    /// finds this cluster's Ferry from the context alone.
    fn publish(&self) {
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ferry-system}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ferry, namespace: ferry-system}}\n\
             data: {{endpoint: \"{}\", cluster: {}}}\n",
            Side::url(self.gateway),
            self.name
        );
        kubectl(
            &self.kubeconfig,
            self.name,
            &["apply", "-f", "-"],
            Some(&yaml),
        );
    }
}

fn logs(components: &[Component]) -> String {
    components
        .iter()
        .map(Component::log)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_services_an_agent_and_the_gateway_as_separate_processes_migrate_an_application() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    let a = Side::new("a", &kc, root);
    let b = Side::new("b", &kc, root);
    let mut running = a.start(root);
    running.extend(b.start(root));
    a.publish();
    b.publish();
    eventually("every component to answer through its gateway", || {
        ["a", "b"]
            .iter()
            .all(|c| cli(&kc, &["--context", c, "pair", "list"]).code == Some(0))
    });

    // The internal APIs hand out credentials: the gateway does not route them, and the
    // components refuse a call without the internal credential, even from an admin.
    let admin_token = env
        .cluster("a")
        .unwrap()
        .user("admin")
        .unwrap()
        .token
        .clone();
    let through_gateway = grpcurl(
        &format!("127.0.0.1:{}", a.gateway),
        Some(&admin_token),
        "ferry.v1.PairingInternalService/ResolvePair",
        r#"{"pair":"a-to-b"}"#,
    );
    assert!(
        through_gateway.contains("Unimplemented"),
        "{through_gateway}"
    );
    let direct = grpcurl(
        &format!("127.0.0.1:{}", a.catalog),
        Some(&admin_token),
        "ferry.v1.CatalogInternalService/ResolveProfile",
        r#"{"profile":"main"}"#,
    );
    assert!(
        direct.contains("PermissionDenied") && direct.contains("internal credential"),
        "{direct}"
    );
    // Each internal API and the agent relay, with no token and as the namespace user.
    let alice = env.token("a", "alice").unwrap();
    for (port, method, data) in [
        (
            a.pairing,
            "ferry.v1.PairingInternalService/ResolvePair",
            r#"{"pair":"a-to-b"}"#,
        ),
        (
            a.catalog,
            "ferry.v1.CatalogInternalService/ResolveProfile",
            r#"{"profile":"main"}"#,
        ),
        (a.transfer, "ferry.v1.AgentService/GetInfo", "{}"),
        (a.gateway, "ferry.v1.AgentService/GetInfo", "{}"),
    ] {
        let addr = format!("127.0.0.1:{port}");
        let anonymous = grpcurl(&addr, None, method, data);
        assert!(
            anonymous.contains("Unauthenticated"),
            "{method} at {addr}: {anonymous}"
        );
        let user = grpcurl(&addr, Some(&alice), method, data);
        assert!(
            user.contains("PermissionDenied"),
            "{method} at {addr} as alice: {user}"
        );
    }
    let agent = grpcurl(
        &format!("127.0.0.1:{}", a.agent),
        None,
        "ferry.v1.AgentService/GetInfo",
        "{}",
    );
    assert!(agent.contains("Unauthenticated"), "{agent}");

    // Profiles, the pair (checked from both sides, through both gateways), the app.
    let (_location, _key) = profiles_and_pair(&kc, s3, root, ("s3", "repo-key"), "components", 41);
    let (ns, _class, src) = sample_app(&kc, root, "parts", |src| {
        make_tree(src, 42);
    });

    // b's pairing service does not trust a's names: the administrator's own token for
    // b goes with the job, and b verifies it.
    let migrated = migrate(&kc, &ns, "a-to-b", &["--to-context", "b"]);
    assert_eq!(migrated.code, Some(0), "{migrated:?}\n{}", logs(&running));
    assert!(migrated.stdout.contains("succeeded"), "{migrated:?}");

    // The data arrived through b's relay and agent, byte for byte.
    let dst = assert_sample_app_on_b(&kc, &ns, &src);
    assert!(dst.starts_with(root.join("volumes-b")), "{}", dst.display());
    // b's transfer relayed the restore to b's agent; a's agent backed it up.
    // b's relay admitted a's transfer by the credential b issued for the pair, and
    // passed the restore to b's agent.
    let relay = std::fs::read_to_string(root.join("b-transfer.log")).unwrap();
    assert!(
        relay
            .lines()
            .any(|l| l.contains("relaying to this cluster's agent")
                && l.contains("Restore")
                && l.contains("system:serviceaccount:")),
        "{relay}"
    );
    drop(running);
}
