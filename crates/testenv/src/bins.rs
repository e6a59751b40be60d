//! Where the Go-built binaries live: `$FERRY_CACHE/testenv/<component>-<version>/bin`,
//! the same layout `scripts/build-testenv.sh` writes.

use std::path::PathBuf;

use crate::error::{Error, Result};

const VERSIONS_ENV: &str = include_str!("../versions.env");

/// The pinned versions of the real components, from `crates/testenv/versions.env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    pub kube: String,
    /// The minor before `kube`, which a cluster runs when a test asks.
    pub kube_previous: String,
    pub etcd: String,
    pub minio: String,
    pub grpcurl: String,
    pub mc: String,
    pub coredns: String,
    pub local_path: String,
    pub crictl: String,
    pub toolbox: String,
    pub helm: String,
    pub csi_provisioner: String,
    /// external-snapshotter: the csi-snapshotter sidecar, snapshot-controller, the CRDs.
    pub csi_snapshotter: String,
    /// The repository's own driver (crates/testenv/csi-hostpath).
    pub csi_hostpath: String,
}

impl Versions {
    pub fn pinned() -> Self {
        let get = |key: &str| {
            VERSIONS_ENV
                .lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        Versions {
            kube: get("KUBE_VERSION"),
            kube_previous: get("KUBE_PREVIOUS_VERSION"),
            etcd: get("ETCD_VERSION"),
            minio: get("MINIO_VERSION"),
            grpcurl: get("GRPCURL_VERSION"),
            mc: get("MC_VERSION"),
            coredns: get("COREDNS_VERSION"),
            local_path: get("LOCAL_PATH_VERSION"),
            crictl: get("CRICTL_VERSION"),
            toolbox: get("TOOLBOX_VERSION"),
            helm: get("HELM_VERSION"),
            csi_provisioner: get("CSI_PROVISIONER_VERSION"),
            csi_snapshotter: get("CSI_SNAPSHOTTER_VERSION"),
            csi_hostpath: get("CSI_HOSTPATH_VERSION"),
        }
    }
}

/// Paths of every binary the environment starts.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub minio: PathBuf,
    pub versions: Versions,
}

/// The cache root: `$FERRY_CACHE`, else `$HOME/.cache/ferry`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERRY_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("ferry")
}

/// A single-binary tool `make testenv` builds into
/// `<cache>/testenv/<name>-<version>/bin/<name>`, or how to get it.
fn cached_tool(name: &'static str, version: &str) -> Result<PathBuf> {
    let path = cache_root()
        .join("testenv")
        .join(format!("{name}-{version}"))
        .join("bin")
        .join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            component: name,
            path,
        })
    }
}

/// The grpcurl binary `make testenv` builds, or how to get it.
pub fn grpcurl() -> Result<PathBuf> {
    cached_tool("grpcurl", &Versions::pinned().grpcurl)
}

/// The MinIO client `mc` that `make testenv` builds, or how to get it. The environment
/// adds its read-only S3 user with it.
pub fn mc() -> Result<PathBuf> {
    cached_tool("mc", &Versions::pinned().mc)
}

/// The helm binary `make testenv` builds from helm.sh/helm/v4, or how to get it.
pub fn helm() -> Result<PathBuf> {
    cached_tool("helm", &Versions::pinned().helm)
}

/// Runs grpcurl with `args`; returns whether it succeeded and its stdout + stderr.
/// Panics when grpcurl is missing or cannot start (for tests).
pub fn run_grpcurl(args: &[&str]) -> (bool, String) {
    let bin = match grpcurl() {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    let out = match std::process::Command::new(&bin).args(args).output() {
        Ok(o) => o,
        Err(e) => panic!("running {}: {e}", bin.display()),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

impl Binaries {
    /// Finds the cached binaries, or says how to build them. `FERRY_TESTENV_BIN` points at
    /// one directory holding all four instead, for people who built them elsewhere.
    pub fn locate() -> Result<Self> {
        let versions = Versions::pinned();
        let override_dir = std::env::var_os("FERRY_TESTENV_BIN").map(PathBuf::from);
        let root = cache_root().join("testenv");
        let at = |component: &str, version: &str, name: &str| match &override_dir {
            Some(dir) => dir.join(name),
            None => root
                .join(format!("{component}-{version}"))
                .join("bin")
                .join(name),
        };
        let bins = Binaries {
            etcd: at("etcd", &versions.etcd, "etcd"),
            kube_apiserver: at("kube", &versions.kube, "kube-apiserver"),
            kube_controller_manager: at("kube", &versions.kube, "kube-controller-manager"),
            minio: at("minio", &versions.minio, "minio"),
            versions,
        };
        for (component, path) in [
            ("etcd", &bins.etcd),
            ("kube-apiserver", &bins.kube_apiserver),
            ("kube-controller-manager", &bins.kube_controller_manager),
            ("minio", &bins.minio),
        ] {
            if !path.is_file() {
                return Err(Error::MissingBinary {
                    component,
                    path: path.clone(),
                });
            }
        }
        Ok(bins)
    }

    /// The same, with the control plane (and so the nodes' binaries) of Kubernetes
    /// `version` instead: what a cluster of the previous minor runs.
    pub fn at_kube_version(&self, version: &str) -> Result<Self> {
        let dir = cache_root()
            .join("testenv")
            .join(format!("kube-{version}"))
            .join("bin");
        let bins = Binaries {
            kube_apiserver: dir.join("kube-apiserver"),
            kube_controller_manager: dir.join("kube-controller-manager"),
            ..self.clone()
        };
        for (component, path) in [
            ("kube-apiserver", &bins.kube_apiserver),
            ("kube-controller-manager", &bins.kube_controller_manager),
        ] {
            if !path.is_file() {
                return Err(Error::MissingBinary {
                    component,
                    path: path.clone(),
                });
            }
        }
        Ok(bins)
    }
}

/// What a real node runs: the node's Kubernetes binaries (built with the control plane),
/// crictl from the cache, and containerd, runc and the CNI plugins from Debian's packages.
#[derive(Debug, Clone)]
pub struct NodeBinaries {
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
    pub kube_scheduler: PathBuf,
    pub crictl: PathBuf,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
}

/// The Debian packages a node needs, as `apt-get install` names them.
pub const NODE_PACKAGES: &str =
    "containerd runc containernetworking-plugins iptables iproute2 conntrack busybox-static";

impl NodeBinaries {
    /// Finds them, or says how to get them (`make testenv` does both).
    pub fn locate(bins: &Binaries) -> Result<Self> {
        let kube_dir = bins
            .kube_apiserver
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let system = |name: &str| {
            ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/sbin", "/bin"]
                .iter()
                .map(|d| PathBuf::from(d).join(name))
                .find(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("/usr/bin").join(name))
        };
        let found = NodeBinaries {
            kubelet: kube_dir.join("kubelet"),
            kube_proxy: kube_dir.join("kube-proxy"),
            kube_scheduler: kube_dir.join("kube-scheduler"),
            crictl: cached_tool("crictl", &bins.versions.crictl)?,
            containerd: system("containerd"),
            ctr: system("ctr"),
        };
        for (component, path) in [
            ("kubelet", &found.kubelet),
            ("kube-proxy", &found.kube_proxy),
            ("kube-scheduler", &found.kube_scheduler),
        ] {
            if !path.is_file() {
                return Err(Error::MissingBinary {
                    component,
                    path: path.clone(),
                });
            }
        }
        for (component, path) in [
            ("containerd", &found.containerd),
            ("ctr", &found.ctr),
            ("runc", &system("runc")),
            (
                "the CNI bridge plugin",
                &PathBuf::from("/usr/lib/cni/bridge"),
            ),
            ("iptables", &system("iptables")),
            ("nsenter", &system("nsenter")),
        ] {
            if !path.is_file() {
                return Err(Error::MissingPackage {
                    component,
                    path: path.clone(),
                    packages: NODE_PACKAGES,
                });
            }
        }
        Ok(found)
    }
}

/// The images every node gets, built by `scripts/build-images.sh` into
/// `<cache>/images/<name>-<tag>.tar` as `ferry.local/<name>:<tag>`.
#[derive(Debug, Clone)]
pub struct NodeImages {
    pub pause: String,
    pub toolbox: String,
    pub coredns: String,
    pub local_path: String,
    /// The CSI driver's image and those of its sidecars and of the snapshot-controller.
    pub csi_hostpath: String,
    pub csi_provisioner: String,
    pub csi_snapshotter: String,
    pub snapshot_controller: String,
    /// Every tarball to import, in the order above.
    pub tarballs: Vec<PathBuf>,
}

impl NodeImages {
    pub fn locate(versions: &Versions) -> Result<Self> {
        let dir = cache_root().join("images");
        let mut tarballs = Vec::new();
        let mut image = |name: &'static str, tag: &str| -> Result<String> {
            let path = dir.join(format!("{name}-{tag}.tar"));
            if !path.is_file() {
                return Err(Error::MissingImage { image: name, path });
            }
            tarballs.push(path);
            Ok(format!("ferry.local/{name}:{tag}"))
        };
        Ok(NodeImages {
            pause: image("pause", &versions.toolbox)?,
            toolbox: image("toolbox", &versions.toolbox)?,
            coredns: image("coredns", &versions.coredns)?,
            local_path: image("local-path-provisioner", &versions.local_path)?,
            csi_hostpath: image("csi-hostpath", &versions.csi_hostpath)?,
            csi_provisioner: image("csi-provisioner", &versions.csi_provisioner)?,
            csi_snapshotter: image("csi-snapshotter", &versions.csi_snapshotter)?,
            snapshot_controller: image("snapshot-controller", &versions.csi_snapshotter)?,
            tarballs,
        })
    }
}

/// The VolumeSnapshot CRDs (classes, contents, snapshots), as `make testenv` copies them
/// from external-snapshotter's client module into
/// `<cache>/testenv/snapshot-controller-<version>/crd/`: the same release as the
/// controller, never a copy in this repository that could drift from it.
pub fn snapshot_crds(versions: &Versions) -> Result<Vec<PathBuf>> {
    let dir = cache_root()
        .join("testenv")
        .join(format!("snapshot-controller-{}", versions.csi_snapshotter))
        .join("crd");
    [
        "volumesnapshotclasses",
        "volumesnapshotcontents",
        "volumesnapshots",
    ]
    .iter()
    .map(|kind| {
        let path = dir.join(format!("{kind}.yaml"));
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingFile {
                what: "a VolumeSnapshot CRD",
                path,
            })
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_versions_are_exact() {
        let v = Versions::pinned();
        assert!(v.kube.starts_with("v1."), "kube version {:?}", v.kube);
        assert!(v.etcd.starts_with("v3.6."), "etcd version {:?}", v.etcd);
        assert!(
            v.minio.starts_with("v0.0.0-"),
            "minio pseudo-version {:?}",
            v.minio
        );
        assert!(v.mc.starts_with("v0.0.0-"), "mc pseudo-version {:?}", v.mc);
        for (name, version) in [
            ("csi-provisioner", &v.csi_provisioner),
            ("external-snapshotter", &v.csi_snapshotter),
        ] {
            assert!(version.starts_with('v'), "{name} version {version:?}");
        }
        assert!(!v.csi_hostpath.is_empty(), "CSI_HOSTPATH_VERSION is unset");
    }
}
