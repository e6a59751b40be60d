//! A real node of a test cluster: a network namespace of its own joined to the host by a
//! veth pair (as kind gives each node a container), a containerd, a kubelet and a
//! kube-proxy running inside it, and a CNI bridge for its pods.
//!
//! Addresses: node `k` (a number from 1 to 250 taken by creating the namespace
//! `ferry-n<k>`, so concurrent environments never collide) has the link `10.250.k.0/24`
//! (host end `.1`, node end `.2`, the node's InternalIP) and the pod range
//! `10.251.k.0/24`. The host forwards between the environment's nodes only: forwarding is
//! switched on for their veths alone, and a rule drops anything from a node that is not
//! headed to another node. Nothing is masqueraded off the machine.
//!
//! Everything a node makes is named in its `node.env` file, written before anything is
//! made, and removed by `scripts/node-teardown.sh`, which is idempotent.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bins::NodeBinaries;
use crate::error::{Error, Result};
use crate::process::{Lifetime, Proc};

/// The teardown script, written into every environment directory that has nodes.
pub(crate) const TEARDOWN_SCRIPT: &str = include_str!("../scripts/node-teardown.sh");

/// The cluster DNS Service's address (CoreDNS), inside `--service-cluster-ip-range`.
pub const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);

/// Everything needed to reach and to remove one running node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The Node object's name: `<cluster>-node<i>`.
    pub name: String,
    /// The network namespace the node's processes run in (`/var/run/netns/<netns>`).
    pub netns: String,
    /// The host's end of the node's veth pair; the API server listens here.
    pub host_ip: Ipv4Addr,
    /// The node's InternalIP (its end of the veth pair): kubelet, NodePorts.
    pub ip: Ipv4Addr,
    /// The node's pod addresses.
    pub pod_cidr: String,
    /// The node's directory: containerd, kubelet root, CNI config, logs, `node.env`.
    pub dir: PathBuf,
    /// containerd's socket, for `ctr` and `crictl`.
    pub containerd_socket: PathBuf,
    /// The cgroup (in every v1 hierarchy) its pods' containers live under.
    pub cgroup_root: String,
}

impl NodeInfo {
    /// The file naming everything this node owns, the argument of the teardown script.
    pub fn env_file(&self) -> PathBuf {
        self.dir.join("node.env")
    }

    /// The kubelet's root directory (`--root-dir`).
    pub fn kubelet_dir(&self) -> PathBuf {
        self.dir.join("kubelet")
    }

    /// The CSI driver's data directory on this node: `<node dir>/csi-hostpath`, with a
    /// directory per volume under `volumes/` and a tar file per snapshot under
    /// `snapshots/`.
    pub fn csi_data_dir(&self) -> PathBuf {
        self.dir.join("csi-hostpath")
    }

    /// Where the kubelet mounts the CSI volume of PersistentVolume `pv` for the pod with
    /// uid `pod_uid` on this node, on the host:
    /// `<kubelet root>/pods/<pod uid>/volumes/kubernetes.io~csi/<pv name>/mount`.
    pub fn csi_volume_mount(&self, pod_uid: &str, pv: &str) -> PathBuf {
        self.kubelet_dir()
            .join("pods")
            .join(pod_uid)
            .join("volumes")
            .join("kubernetes.io~csi")
            .join(pv)
            .join("mount")
    }

    /// The node's veth on the host.
    pub fn host_interface(&self) -> String {
        format!("fn{}h", self.index())
    }

    fn index(&self) -> u8 {
        self.netns
            .trim_start_matches("ferry-n")
            .parse()
            .unwrap_or_default()
    }
}

/// The directory holding a cluster's node directories (`<cluster>/nodes`), made a shared
/// mount of its own.
fn shared_dir(node_dir: &Path) -> PathBuf {
    node_dir
        .parent()
        .map_or_else(|| node_dir.to_owned(), Path::to_owned)
}

/// Makes `dir` a mount of its own with shared propagation, once per cluster.
///
/// Why: a pod mounting a node directory with `HostToContainer` propagation (Ferry's
/// agent reading CSI volumes the kubelet mounts later) needs the mount holding that
/// directory to be shared, as `/` is on systemd hosts and in kind's node containers.
/// This machine's `/` is private, and making it shared would change the machine; a
/// bind mount of the cluster's node directories onto themselves gives the nodes the
/// same propagation without touching anything outside. The last node's teardown
/// unmounts it (`SHARED_DIR` in `node.env`).
fn share_mounts(dir: &Path) -> Result<()> {
    let path = dir.display().to_string();
    if !mounts_under(dir).contains(&path) {
        run("mount", &["--bind", &path, &path])?;
    }
    run("mount", &["--make-rshared", &path])?;
    Ok(())
}

/// Runs a command to completion; an error names it and carries its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            component: program.to_owned(),
            program: program.into(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs a command inside the namespace `netns`. `nsenter --net`, not `ip netns exec`: the
/// latter remounts /sys, which hides the cgroup mounts from the kubelet.
fn run_in(netns: &str, program: &str, args: &[&str]) -> Result<String> {
    let net = format!("--net=/var/run/netns/{netns}");
    let mut all = vec![net.as_str(), "--", program];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

/// Takes the first free node number by creating its namespace: `ip netns add` fails when
/// the name exists, which makes the choice atomic across processes.
fn allocate_netns() -> Result<(u8, String)> {
    for k in 1..=250u8 {
        let name = format!("ferry-n{k}");
        if Path::new("/var/run/netns").join(&name).exists() {
            continue;
        }
        if run("ip", &["netns", "add", &name]).is_ok() {
            return Ok((k, name));
        }
    }
    Err(Error::Command {
        command: "ip netns add ferry-n<1..250>".to_owned(),
        status: "no free name".to_owned(),
        stderr: "250 node namespaces exist; stale environments can be removed with \
                 `make dev-down` or by rerunning the tests, which sweep them"
            .to_owned(),
    })
}

/// Phase one of a node, before its cluster's API server starts (which listens on the
/// first node's host address): the namespace, the veth pair, routes and forwarding rules.
pub(crate) fn create_network(name: &str, dir: &Path, crictl: &Path) -> Result<NodeInfo> {
    std::fs::create_dir_all(dir.join("pids")).map_err(Error::io("creating", dir))?;
    let (k, netns) = allocate_netns()?;
    let node = NodeInfo {
        name: name.to_owned(),
        netns: netns.clone(),
        host_ip: Ipv4Addr::new(10, 250, k, 1),
        ip: Ipv4Addr::new(10, 250, k, 2),
        pod_cidr: format!("10.251.{k}.0/24"),
        dir: dir.to_owned(),
        containerd_socket: dir.join("run/containerd.sock"),
        cgroup_root: format!("/ferry-n{k}"),
    };
    // Written first, so that whatever fails below is still torn down.
    let env = format!(
        "NODE_DIR={}\nSHARED_DIR={}\nNETNS={netns}\nHOST_IF={}\nPOD_CIDR={}\nCONTAINERD_SOCK={}\nCGROUP_ROOT={}\nCRICTL={}\n",
        dir.display(),
        shared_dir(dir).display(),
        node.host_interface(),
        node.pod_cidr,
        node.containerd_socket.display(),
        node.cgroup_root,
        crictl.display(),
    );
    std::fs::write(node.env_file(), env).map_err(Error::io("writing", node.env_file()))?;
    share_mounts(&shared_dir(dir))?;

    let host_if = node.host_interface();
    let node_if = format!("fn{k}n");
    let host_cidr = format!("{}/24", node.host_ip);
    let node_cidr = format!("{}/24", node.ip);
    let host_ip = node.host_ip.to_string();
    run(
        "ip",
        &[
            "link", "add", &host_if, "type", "veth", "peer", "name", &node_if,
        ],
    )?;
    run("ip", &["link", "set", &node_if, "netns", &netns])?;
    run("ip", &["addr", "add", &host_cidr, "dev", &host_if])?;
    run("ip", &["link", "set", &host_if, "up"])?;
    // Forwarding on this veth only: the machine's own interfaces keep theirs as they were.
    run(
        "sysctl",
        &["-q", "-w", &format!("net.ipv4.conf.{host_if}.forwarding=1")],
    )?;
    run(
        "ip",
        &[
            "route",
            "add",
            &node.pod_cidr,
            "via",
            &node.ip.to_string(),
            "dev",
            &host_if,
        ],
    )?;
    // A node may reach other nodes (cluster a's pods reach cluster b's NodePorts), and the
    // host itself (INPUT, not FORWARD): nothing else.
    run(
        "iptables",
        &["-w", "5", "-I", "FORWARD", "-i", &host_if, "-j", "DROP"],
    )?;
    run(
        "iptables",
        &[
            "-w", "5", "-I", "FORWARD", "-i", &host_if, "-o", "fn+", "-j", "ACCEPT",
        ],
    )?;

    run_in(&netns, "ip", &["link", "set", "lo", "up"])?;
    run_in(&netns, "ip", &["link", "set", &node_if, "name", "eth0"])?;
    run_in(&netns, "ip", &["addr", "add", &node_cidr, "dev", "eth0"])?;
    run_in(&netns, "ip", &["link", "set", "eth0", "up"])?;
    run_in(&netns, "ip", &["route", "add", "default", "via", &host_ip])?;
    // Pods route through the node; kube-proxy's rules must see bridged traffic so that a
    // pod reaching a Service backed by a pod on the same bridge gets its replies un-NATed.
    run_in(&netns, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
    run_in(
        &netns,
        "sysctl",
        &["-q", "-w", "net.bridge.bridge-nf-call-iptables=1"],
    )?;
    for ctrl in cgroup_v1_controllers() {
        let d = ctrl.join(node.cgroup_root.trim_start_matches('/'));
        std::fs::create_dir_all(&d).map_err(Error::io("creating cgroup", &d))?;
    }
    Ok(node)
}

/// The mounted cgroup v1 hierarchies (`/sys/fs/cgroup/<controller>`).
fn cgroup_v1_controllers() -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let point = left.split_whitespace().nth(4)?;
            (fstype == "cgroup").then(|| PathBuf::from(point))
        })
        .collect()
}

/// What phase two needs from the cluster.
#[derive(Debug)]
pub(crate) struct NodeSetup<'a> {
    pub bins: &'a NodeBinaries,
    /// A kubeconfig the kubelet and kube-proxy use (the cluster's admin).
    pub kubeconfig: &'a Path,
    /// Image tarballs to import into the node's containerd.
    pub images: &'a [PathBuf],
    /// The pause image's reference.
    pub pause_image: &'a str,
}

/// Phase two: containerd, the images, the CNI config, the kubelet and kube-proxy, all in
/// the node's namespace. Returns the pids started (also recorded under `pids/` for the
/// teardown script).
pub(crate) async fn start_runtime(node: &NodeInfo, setup: &NodeSetup<'_>) -> Result<Vec<u32>> {
    let dir = &node.dir;
    for sub in [
        "run",
        "logs",
        "cni/net.d",
        "cni/ipam",
        "kubelet",
        "pod-logs",
    ] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(Error::io("creating", &d))?;
    }
    let mut pids = Vec::new();

    let containerd_config = dir.join("containerd.toml");
    write(
        &containerd_config,
        &containerd_toml(node, setup.pause_image),
    )?;
    let containerd = spawn_in(
        node,
        "containerd",
        &setup.bins.containerd,
        &[format!("--config={}", containerd_config.display())],
    )?;
    pids.push(containerd);
    wait_for(
        &format!("containerd of {}", node.name),
        &dir.join("logs/containerd.log"),
        Duration::from_secs(30),
        || node.containerd_socket.exists(),
    )
    .await?;

    let sock = node.containerd_socket.display().to_string();
    let ctr = setup.bins.ctr.display().to_string();
    // All at once: each import is mostly hashing and copying one large layer, and the CSI
    // images alone are about 230 MB, so this uses both cores instead of one.
    std::thread::scope(|scope| {
        let imports: Vec<_> = setup
            .images
            .iter()
            .map(|image| {
                let (ctr, sock) = (&ctr, &sock);
                scope.spawn(move || {
                    let image = image.display().to_string();
                    run(
                        ctr,
                        &[
                            "--address",
                            sock,
                            "--namespace",
                            "k8s.io",
                            "images",
                            "import",
                            &image,
                        ],
                    )
                })
            })
            .collect();
        imports.into_iter().try_for_each(|t| match t.join() {
            Ok(result) => result.map(drop),
            Err(_) => Err(Error::Command {
                command: "ctr images import".to_owned(),
                status: "panicked".to_owned(),
                stderr: String::new(),
            }),
        })
    })?;

    write(
        &dir.join("cni/net.d/10-ferry.conflist"),
        &cni_conflist(node),
    )?;
    // Pods whose DNS policy is Default get this: no nameserver reachable from here but
    // the cluster's own.
    write(
        &dir.join("resolv.conf"),
        &format!("nameserver {CLUSTER_DNS}\n"),
    )?;

    let kubelet_config = dir.join("kubelet.yaml");
    write(&kubelet_config, &kubelet_yaml(node))?;
    let kubelet = spawn_in(
        node,
        "kubelet",
        &setup.bins.kubelet,
        &[
            format!("--config={}", kubelet_config.display()),
            format!("--kubeconfig={}", setup.kubeconfig.display()),
            format!("--root-dir={}", node.kubelet_dir().display()),
            format!("--hostname-override={}", node.name),
            format!("--node-ip={}", node.ip),
            "--v=1".to_owned(),
        ],
    )?;
    pids.push(kubelet);

    let proxy_config = dir.join("kube-proxy.yaml");
    write(&proxy_config, &kube_proxy_yaml(node, setup.kubeconfig))?;
    let proxy = spawn_in(
        node,
        "kube-proxy",
        &setup.bins.kube_proxy,
        &[
            format!("--config={}", proxy_config.display()),
            "--v=1".to_owned(),
        ],
    )?;
    pids.push(proxy);
    Ok(pids)
}

/// Starts a node process inside the node's namespace. It is detached in either lifetime:
/// containerd must outlive a dead test process so the teardown can remove pod sandboxes
/// through it, and the environment's watchdog (or `ferry-testenv down`) stops them all.
fn spawn_in(node: &NodeInfo, name: &str, program: &Path, args: &[String]) -> Result<u32> {
    let mut all = vec![
        format!("--net=/var/run/netns/{}", node.netns),
        "--".to_owned(),
        program.display().to_string(),
    ];
    all.extend_from_slice(args);
    let proc = Proc::spawn(
        &format!("{name} ({})", node.name),
        Path::new("nsenter"),
        &all,
        &[],
        &node.dir.join(format!("logs/{name}.log")),
        Lifetime::Detached,
    )?;
    let pid = proc.release();
    let file = node.dir.join("pids").join(name);
    write(&file, &format!("{pid}\n"))?;
    Ok(pid)
}

async fn wait_for(
    what: &str,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > timeout {
            return Err(Error::NotReady {
                component: what.to_owned(),
                seconds: timeout.as_secs(),
                log: log.to_owned(),
                tail: crate::process::log_tail(log, 30),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn write(path: &Path, content: &str) -> Result<()> {
    std::fs::write(path, content).map_err(Error::io("writing", path))
}

fn containerd_toml(node: &NodeInfo, pause_image: &str) -> String {
    let d = node.dir.display();
    let sock = node.containerd_socket.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
# Snapshotters this machine cannot use, and exporters that would reach out.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # Pod network namespaces under the state directory, so the teardown finds them there.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
"#
    )
}

fn cni_conflist(node: &NodeInfo) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "ferry",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "fbr0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": node.pod_cidr }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": node.dir.join("cni/ipam"),
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    })
    .to_string()
}

fn kubelet_yaml(node: &NodeInfo) -> String {
    let d = node.dir.display();
    let sock = node.containerd_socket.display();
    // Test settings, not production ones: anonymous access to the kubelet's API (reachable
    // only from this machine's node namespaces), cgroup v1 without QoS cgroups, and
    // eviction thresholds that never fire on a busy CI disk.
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
cgroupRoot: {cgroup_root}
enforceNodeAllocatable: []
failSwapOn: false
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
address: {ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://{sock}
clusterDNS: ["{dns}"]
clusterDomain: cluster.local
resolvConf: {d}/resolv.conf
podLogsDir: {d}/pod-logs
volumePluginDir: {d}/volume-plugins
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "0%"
  imagefs.available: "0%"
  nodefs.inodesFree: "0%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
serializeImagePulls: false
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 2s
syncFrequency: 10s
fileCheckFrequency: 10s
maxPods: 60
"#,
        cgroup_root = node.cgroup_root,
        ip = node.ip,
        dns = CLUSTER_DNS,
    )
}

fn kube_proxy_yaml(node: &NodeInfo, kubeconfig: &Path) -> String {
    // conntrack sizes stay as the kernel has them (they are not per namespace), and the
    // health and metrics ports listen on the node's own loopback.
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {name}
bindAddress: {ip}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
mode: iptables
nodePortAddresses: ["{ip}/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
        kubeconfig = kubeconfig.display(),
        name = node.name,
        ip = node.ip,
    )
}

/// Runs the teardown script on each node file; errors are logged, never raised, because
/// this runs on the way out.
pub(crate) fn teardown(script: &Path, env_files: &[PathBuf]) {
    for file in env_files {
        if !file.exists() {
            continue;
        }
        match Command::new("bash").arg(script).arg(file).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => tracing::warn!(
                node = %file.display(),
                stderr = %String::from_utf8_lossy(&out.stderr),
                "node teardown reported a failure"
            ),
            Err(e) => {
                tracing::warn!(node = %file.display(), error = %e, "node teardown did not run")
            }
        }
    }
}

/// The `node.env` files under an environment directory (`<env>/<cluster>/nodes/*/node.env`).
pub(crate) fn env_files_under(env_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(clusters) = std::fs::read_dir(env_dir) else {
        return files;
    };
    for cluster in clusters.flatten() {
        let Ok(nodes) = std::fs::read_dir(cluster.path().join("nodes")) else {
            continue;
        };
        for node in nodes.flatten() {
            let f = node.path().join("node.env");
            if f.is_file() {
                files.push(f);
            }
        }
    }
    files.sort();
    files
}

/// Whether anything is still mounted at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_owned)
        .collect()
}

/// What a node could have left on the machine (mounts, namespace, interface, rules,
/// route, cgroups, processes), one line each; empty once its teardown is done.
pub fn leftovers(node: &NodeInfo) -> Vec<String> {
    let mut left = Vec::new();
    for m in mounts_under(&node.dir) {
        left.push(format!("mount {m}"));
    }
    // Shared by the cluster's nodes: left only once all of them are torn down.
    let shared = shared_dir(&node.dir);
    if mounts_under(&shared).contains(&shared.display().to_string()) {
        left.push(format!(
            "mount {} (the nodes' shared mount)",
            shared.display()
        ));
    }
    if Path::new("/var/run/netns").join(&node.netns).exists() {
        left.push(format!("network namespace {}", node.netns));
    }
    if Path::new("/sys/class/net")
        .join(node.host_interface())
        .exists()
    {
        left.push(format!("interface {}", node.host_interface()));
    }
    let rules = Command::new("iptables")
        .args(["-w", "5", "-S", "FORWARD"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    for rule in String::from_utf8_lossy(&rules).lines() {
        if rule.contains(&format!("{} ", node.host_interface())) {
            left.push(format!("iptables rule {rule}"));
        }
    }
    let routes = Command::new("ip")
        .args(["route"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    for route in String::from_utf8_lossy(&routes).lines() {
        if route.starts_with(&node.pod_cidr) {
            left.push(format!("route {route}"));
        }
    }
    for ctrl in cgroup_v1_controllers() {
        let d = ctrl.join(node.cgroup_root.trim_start_matches('/'));
        if d.exists() {
            left.push(format!("cgroup {}", d.display()));
        }
    }
    let dir = node.dir.display().to_string();
    for proc in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(proc.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&dir) {
            left.push(format!("process {}: {cmdline}", proc.file_name().display()));
        }
    }
    left
}
