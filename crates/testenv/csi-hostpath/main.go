// csi-hostpath: the test clusters' CSI driver (hostpath.csi.k8s.io). A volume is a
// directory under its node's data directory, a snapshot is a tar file of one, and a pod
// gets a volume as a bind mount at the path the kubelet asks for.
//
// It runs in two modes, both speaking CSI on --endpoint:
//
//	controller  Identity and Controller: creates and deletes volume directories and
//	            snapshots on any node of the cluster (every node's data directory is
//	            mounted into it at the same path as on the host; the host's filesystem
//	            is shared by all nodes), beside csi-provisioner and csi-snapshotter.
//	node        Identity and Node, one per node: bind-mounts that node's volumes into
//	            pods, and registers itself with the node's kubelet through the
//	            plugin-registration socket (what node-driver-registrar does elsewhere).
//
// A volume lives on one node: its id is "<node>_<name>" and it reports that node as its
// topology, so the scheduler puts its pods there. A snapshot's id is "<node>_<name>" too
// (the node of its source volume); a volume made from it may live on any node.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	registration "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const (
	driverName = "hostpath.csi.k8s.io"
	// The node label (and topology segment) of a volume's node.
	topologyKey = "topology.hostpath.csi/node"
	// Reported when a claim asks for no size.
	defaultCapacity = 1 << 30
)

var version = "dev"

// dataDirs maps node names to their data directories ("node=dir" flags).
type dataDirs map[string]string

func (d dataDirs) String() string { return fmt.Sprint(map[string]string(d)) }

func (d dataDirs) Set(v string) error {
	node, dir, ok := strings.Cut(v, "=")
	if !ok || node == "" || !filepath.IsAbs(dir) {
		return fmt.Errorf("want NODE=/ABSOLUTE/DIR, got %q", v)
	}
	d[node] = dir
	return nil
}

func main() {
	dirs := dataDirs{}
	mode := flag.String("mode", "", "controller or node")
	endpoint := flag.String("endpoint", "", "path of the CSI socket to serve")
	nodeName := flag.String("node-name", "", "node mode: this node's name")
	registrationDir := flag.String("registration-dir", "", "node mode: the kubelet's plugins_registry directory")
	kubeletEndpoint := flag.String("kubelet-endpoint", "", "node mode: the CSI socket's path as the kubelet sees it (default --endpoint)")
	flag.Var(dirs, "data-dir", "NODE=DIR: a node's data directory (repeated; node mode takes its own)")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	if *endpoint == "" || len(dirs) == 0 {
		log.Fatal("--endpoint and --data-dir are required")
	}
	d := &driver{dirs: dirs, node: *nodeName}
	srv := grpc.NewServer(grpc.UnaryInterceptor(logCalls))
	csi.RegisterIdentityServer(srv, d)
	switch *mode {
	case "controller":
		csi.RegisterControllerServer(srv, d)
	case "node":
		if _, ok := dirs[*nodeName]; !ok || *registrationDir == "" {
			log.Fatal("node mode needs --node-name, its --data-dir and --registration-dir")
		}
		csi.RegisterNodeServer(srv, d)
	default:
		log.Fatalf("--mode must be controller or node, not %q", *mode)
	}
	lis, err := listen(*endpoint)
	if err != nil {
		log.Fatal(err)
	}
	if *mode == "node" {
		target := *kubeletEndpoint
		if target == "" {
			target = *endpoint
		}
		if err := register(*registrationDir, target); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("%s %s serving %s mode on %s", driverName, version, *mode, *endpoint)
	if err := srv.Serve(lis); err != nil {
		log.Fatal(err)
	}
}

// listen removes a socket a previous run left and listens on a fresh one.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return net.Listen("unix", path)
}

func logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		log.Printf("%s: %v", info.FullMethod, err)
	} else if !strings.HasSuffix(info.FullMethod, "/Probe") {
		log.Printf("%s: ok", info.FullMethod)
	}
	return resp, err
}

// The kubelet's plugin watcher finds this socket in its plugins_registry directory, asks
// GetInfo where the driver listens, then calls NodeGetInfo there.
type registrar struct {
	registration.UnimplementedRegistrationServer
	endpoint string
}

func (r *registrar) GetInfo(context.Context, *registration.InfoRequest) (*registration.PluginInfo, error) {
	return &registration.PluginInfo{
		Type:              registration.CSIPlugin,
		Name:              driverName,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registrar) NotifyRegistrationStatus(_ context.Context, s *registration.RegistrationStatus) (*registration.RegistrationStatusResponse, error) {
	if !s.PluginRegistered {
		// Restarting is how the kubelet gets another try.
		log.Fatalf("the kubelet refused the registration: %s", s.Error)
	}
	log.Printf("registered with the kubelet")
	return &registration.RegistrationStatusResponse{}, nil
}

func register(dir, endpoint string) error {
	lis, err := listen(filepath.Join(dir, driverName+"-reg.sock"))
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	registration.RegisterRegistrationServer(srv, &registrar{endpoint: endpoint})
	go func() {
		if err := srv.Serve(lis); err != nil {
			log.Fatalf("registration socket: %v", err)
		}
	}()
	return nil
}

type driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer
	dirs dataDirs
	node string
	// One operation at a time: the sidecars retry, and a test driver needs no concurrency.
	mu sync.Mutex
}

// ---- Identity

func (d *driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: driverName, VendorVersion: version}, nil
}

func (d *driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	caps := []csi.PluginCapability_Service_Type{
		csi.PluginCapability_Service_CONTROLLER_SERVICE,
		csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS,
	}
	resp := &csi.GetPluginCapabilitiesResponse{}
	for _, c := range caps {
		resp.Capabilities = append(resp.Capabilities, &csi.PluginCapability{
			Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: c}},
		})
	}
	return resp, nil
}

func (d *driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

// ---- Ids and paths

// split parses "<node>_<name>"; node names (DNS-1123) have no '_'.
func (d *driver) split(id string) (node, name, dir string, err error) {
	node, name, ok := strings.Cut(id, "_")
	if !ok || name == "" || strings.ContainsAny(name, "/_") || name == "." || name == ".." {
		return "", "", "", status.Errorf(codes.NotFound, "malformed id %q", id)
	}
	dir, ok = d.dirs[node]
	if !ok {
		return "", "", "", status.Errorf(codes.NotFound, "id %q names node %q, which this driver does not serve", id, node)
	}
	return node, name, dir, nil
}

func (d *driver) volumePath(id string) (string, error) {
	_, name, dir, err := d.split(id)
	return filepath.Join(dir, "volumes", name), err
}

func (d *driver) snapshotPath(id string) (string, error) {
	_, name, dir, err := d.split(id)
	return filepath.Join(dir, "snapshots", name+".tar"), err
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// ---- Controller

func (d *driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	caps := []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	}
	resp := &csi.ControllerGetCapabilitiesResponse{}
	for _, c := range caps {
		resp.Capabilities = append(resp.Capabilities, &csi.ControllerServiceCapability{
			Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: c}},
		})
	}
	return resp, nil
}

// pickNode takes the first node of the preferred topologies (the scheduler's choice under
// WaitForFirstConsumer), else of the requisite ones.
func (d *driver) pickNode(req *csi.TopologyRequirement) (string, error) {
	if req != nil {
		for _, t := range append(req.GetPreferred(), req.GetRequisite()...) {
			if n := t.GetSegments()[topologyKey]; n != "" {
				if _, ok := d.dirs[n]; ok {
					return n, nil
				}
			}
		}
	}
	if len(d.dirs) == 1 {
		for n := range d.dirs {
			return n, nil
		}
	}
	return "", status.Errorf(codes.ResourceExhausted, "no node of this driver is in the topology asked for (%v)", req)
}

func (d *driver) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" || strings.ContainsAny(req.GetName(), "/_") {
		return nil, status.Errorf(codes.InvalidArgument, "bad volume name %q", req.GetName())
	}
	for _, c := range req.GetVolumeCapabilities() {
		if c.GetBlock() != nil {
			return nil, status.Error(codes.InvalidArgument, "block volumes are not supported")
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	node, err := d.pickNode(req.GetAccessibilityRequirements())
	if err != nil {
		return nil, err
	}
	id := node + "_" + req.GetName()
	path, err := d.volumePath(id)
	if err != nil {
		return nil, err
	}
	// Names are the provisioner's idempotency key: a retry finds the volume made.
	if !exists(path) {
		if err := d.populate(path, req.GetVolumeContentSource()); err != nil {
			return nil, err
		}
	}
	capacity := req.GetCapacityRange().GetRequiredBytes()
	if capacity == 0 {
		capacity = defaultCapacity
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:           id,
		CapacityBytes:      capacity,
		ContentSource:      req.GetVolumeContentSource(),
		AccessibleTopology: []*csi.Topology{{Segments: map[string]string{topologyKey: node}}},
	}}, nil
}

// populate makes the volume directory at path, from a snapshot or another volume when
// asked, in a temporary directory renamed into place, so that a failure leaves nothing.
func (d *driver) populate(path string, src *csi.VolumeContentSource) error {
	tmp := path + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return status.Errorf(codes.Internal, "removing %s: %v", tmp, err)
	}
	if err := os.MkdirAll(tmp, 0o777); err != nil {
		return status.Errorf(codes.Internal, "creating %s: %v", tmp, err)
	}
	// Writable by any pod user, as a fresh local-path volume is.
	if err := os.Chmod(tmp, 0o777); err != nil {
		return status.Errorf(codes.Internal, "chmod %s: %v", tmp, err)
	}
	switch {
	case src.GetSnapshot() != nil:
		snap, err := d.snapshotPath(src.GetSnapshot().GetSnapshotId())
		if err != nil {
			return err
		}
		if !exists(snap) {
			return status.Errorf(codes.NotFound, "snapshot %s does not exist", src.GetSnapshot().GetSnapshotId())
		}
		if err := run("tar", "-x", "--numeric-owner", "-f", snap, "-C", tmp); err != nil {
			return err
		}
	case src.GetVolume() != nil:
		from, err := d.volumePath(src.GetVolume().GetVolumeId())
		if err != nil {
			return err
		}
		if !exists(from) {
			return status.Errorf(codes.NotFound, "volume %s does not exist", src.GetVolume().GetVolumeId())
		}
		if err := run("cp", "-a", from+"/.", tmp+"/"); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return status.Errorf(codes.Internal, "renaming %s: %v", tmp, err)
	}
	return nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return status.Errorf(codes.Internal, "%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func (d *driver) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	path, err := d.volumePath(req.GetVolumeId())
	if status.Code(err) == codes.NotFound {
		return &csi.DeleteVolumeResponse{}, nil
	} else if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(path); err != nil {
		return nil, status.Errorf(codes.Internal, "removing %s: %v", path, err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (d *driver) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	path, err := d.volumePath(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if !exists(path) {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist", req.GetVolumeId())
	}
	for _, c := range req.GetVolumeCapabilities() {
		if c.GetBlock() != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: "block volumes are not supported"}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeCapabilities: req.GetVolumeCapabilities(),
	}}, nil
}

func (d *driver) CreateSnapshot(_ context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" || strings.ContainsAny(req.GetName(), "/_") {
		return nil, status.Errorf(codes.InvalidArgument, "bad snapshot name %q", req.GetName())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	node, _, _, err := d.split(req.GetSourceVolumeId())
	if err != nil {
		return nil, err
	}
	vol, err := d.volumePath(req.GetSourceVolumeId())
	if err != nil {
		return nil, err
	}
	if !exists(vol) {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist", req.GetSourceVolumeId())
	}
	id := node + "_" + req.GetName()
	path, err := d.snapshotPath(id)
	if err != nil {
		return nil, err
	}
	if !exists(path) {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, status.Errorf(codes.Internal, "creating %s: %v", filepath.Dir(path), err)
		}
		// Written aside and renamed, so a snapshot file is always whole.
		if err := run("tar", "-c", "--numeric-owner", "-f", path+".tmp", "-C", vol, "."); err != nil {
			return nil, err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return nil, status.Errorf(codes.Internal, "renaming %s: %v", path, err)
		}
	}
	snap, err := describeSnapshot(id, req.GetSourceVolumeId(), path)
	if err != nil {
		return nil, err
	}
	return &csi.CreateSnapshotResponse{Snapshot: snap}, nil
}

// describeSnapshot reports a snapshot file; its time is the file's, so that a retried
// CreateSnapshot reports the same snapshot.
func describeSnapshot(id, source, path string) (*csi.Snapshot, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "snapshot %s: %v", id, err)
	}
	return &csi.Snapshot{
		SnapshotId:     id,
		SourceVolumeId: source,
		SizeBytes:      info.Size(),
		CreationTime:   timestamppb.New(info.ModTime()),
		ReadyToUse:     true,
	}, nil
}

func (d *driver) DeleteSnapshot(_ context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	path, err := d.snapshotPath(req.GetSnapshotId())
	if status.Code(err) == codes.NotFound {
		return &csi.DeleteSnapshotResponse{}, nil
	} else if err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "removing %s: %v", path, err)
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

// ListSnapshots answers by id (what the snapshotter asks for pre-provisioned snapshots);
// a snapshot's source volume is not recorded, so listing by source finds none.
func (d *driver) ListSnapshots(_ context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	resp := &csi.ListSnapshotsResponse{}
	if id := req.GetSnapshotId(); id != "" {
		path, err := d.snapshotPath(id)
		if err != nil {
			return resp, nil
		}
		if snap, err := describeSnapshot(id, "", path); err == nil {
			resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: snap})
		}
		return resp, nil
	}
	if req.GetSourceVolumeId() != "" {
		return resp, nil
	}
	for node, dir := range d.dirs {
		files, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*.tar"))
		for _, f := range files {
			id := node + "_" + strings.TrimSuffix(filepath.Base(f), ".tar")
			if snap, err := describeSnapshot(id, "", f); err == nil {
				resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: snap})
			}
		}
	}
	return resp, nil
}

// ---- Node

func (d *driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{
		NodeId:             d.node,
		AccessibleTopology: &csi.Topology{Segments: map[string]string{topologyKey: d.node}},
	}, nil
}

func (d *driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

// mounted says whether path is a mount point, from this process's mount table.
func mounted(path string) (bool, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && unescapeMountPath(fields[4]) == path {
			return true, nil
		}
	}
	return false, nil
}

// unescapeMountPath undoes mountinfo's octal escapes of space, tab, newline and backslash.
func unescapeMountPath(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

func (d *driver) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if target == "" || !filepath.IsAbs(target) {
		return nil, status.Errorf(codes.InvalidArgument, "bad target path %q", target)
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		return nil, status.Error(codes.InvalidArgument, "block volumes are not supported")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	node, _, _, err := d.split(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if node != d.node {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s lives on node %s, not on %s", req.GetVolumeId(), node, d.node)
	}
	src, err := d.volumePath(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if !exists(src) {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist", req.GetVolumeId())
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "creating %s: %v", target, err)
	}
	if ok, err := mounted(target); err != nil {
		return nil, status.Errorf(codes.Internal, "reading the mount table: %v", err)
	} else if ok {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	// The kubelet's pods directory is mounted here with Bidirectional propagation, so this
	// bind mount appears on the host, where the kubelet hands it to the pod.
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return nil, status.Errorf(codes.Internal, "bind-mounting %s on %s: %v", src, target, err)
	}
	if req.GetReadonly() {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(target, 0)
			return nil, status.Errorf(codes.Internal, "making %s read-only: %v", target, err)
		}
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (d *driver) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if target == "" {
		return nil, status.Error(codes.InvalidArgument, "no target path")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		ok, err := mounted(target)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "reading the mount table: %v", err)
		}
		if !ok {
			break
		}
		if err := unix.Unmount(target, 0); err != nil {
			return nil, status.Errorf(codes.Internal, "unmounting %s: %v", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "removing %s: %v", target, err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}
