//! Checks the generated code and the descriptor set against what Ferry's services and
//! clients rely on: message shapes and wire numbers, service and method names, streaming
//! kinds, and that every element of the API is documented.

use std::collections::{BTreeMap, BTreeSet};

use ferry_proto::FILE_DESCRIPTOR_SET;
use ferry_proto::v1::{
    ApplicationSelector, ClusterRef, ErrorCode, ErrorDetail, Job, JobEvent, JobKind, JobReport,
    JobState, JobStep, ObjectAction, ObjectOutcome, ObjectRef, Progress, StepState, VolumeOutcome,
    VolumeProgress, VolumeResult, cluster_ref, job_event,
};
use prost::Message;
use prost_types::{DescriptorProto, Duration, FileDescriptorSet, Timestamp};

fn sample_progress() -> Progress {
    Progress {
        step: "transfer-volumes".to_owned(),
        objects_done: 12,
        objects_total: 40,
        files_done: 1_234,
        files_total: 5_000,
        bytes_read: 7 << 30,
        bytes_new: 3 << 30,
        bytes_uploaded: 1 << 30,
        bytes_total: 20 << 30,
        rate_bytes_per_second: 250 << 20,
        eta: Some(Duration {
            seconds: 52,
            nanos: 0,
        }),
        volumes: vec![VolumeProgress {
            pvc_namespace: "shop".to_owned(),
            pvc_name: "data-db-0".to_owned(),
            through: "csi snapshot ferry-1 (class snaps), mover pod ferry-mover-2".to_owned(),
            files_done: 1_234,
            files_total: 5_000,
            bytes_read: 7 << 30,
            bytes_total: 20 << 30,
            done: false,
        }],
    }
}

fn sample_job() -> Job {
    Job {
        id: "job-0001".to_owned(),
        kind: JobKind::Migration.into(),
        state: JobState::Running.into(),
        created_at: Some(Timestamp {
            seconds: 1_760_000_000,
            nanos: 5,
        }),
        updated_at: Some(Timestamp {
            seconds: 1_760_000_042,
            nanos: 0,
        }),
        steps: vec![
            JobStep {
                name: "capture".to_owned(),
                state: StepState::Succeeded.into(),
                started_at: Some(Timestamp {
                    seconds: 1_760_000_001,
                    nanos: 0,
                }),
                finished_at: Some(Timestamp {
                    seconds: 1_760_000_010,
                    nanos: 0,
                }),
                message: "captured 40 objects".to_owned(),
            },
            JobStep {
                name: "transfer-volumes".to_owned(),
                state: StepState::Running.into(),
                started_at: Some(Timestamp {
                    seconds: 1_760_000_010,
                    nanos: 0,
                }),
                finished_at: None,
                message: String::new(),
            },
        ],
        source: Some(ClusterRef {
            target: Some(cluster_ref::Target::Local(true)),
        }),
        destination: Some(ClusterRef {
            target: Some(cluster_ref::Target::PairId("pair-7".to_owned())),
        }),
        application: Some(ApplicationSelector {
            namespace: "shop".to_owned(),
            label_selector: "app=shop".to_owned(),
            include_resources: vec![],
            exclude_resources: vec!["secrets".to_owned()],
        }),
        dry_run: false,
        schedule_id: "sched-1".to_owned(),
        progress: Some(sample_progress()),
        error: None,
        requested_by: "alice".to_owned(),
        request_id: "8d0c6a3e".to_owned(),
        warm: Some(ferry_proto::v1::WarmStatus {
            syncs: 3,
            recent_syncs: vec![ferry_proto::v1::WarmSync {
                number: 3,
                r#final: false,
                started_at: Some(Timestamp {
                    seconds: 1_760_000_030,
                    nanos: 0,
                }),
                duration: Some(Duration {
                    seconds: 2,
                    nanos: 500_000_000,
                }),
                bytes_total: 1 << 30,
                bytes_uploaded: 11 << 20,
                bytes_written: 10 << 20,
                restore_point_id: "rp-3".to_owned(),
                backup_duration: Some(Duration {
                    seconds: 0,
                    nanos: 700_000_000,
                }),
                commit_duration: Some(Duration {
                    seconds: 0,
                    nanos: 200_000_000,
                }),
                restore_duration: Some(Duration {
                    seconds: 1,
                    nanos: 600_000_000,
                }),
            }],
            next_sync_at: Some(Timestamp {
                seconds: 1_760_000_090,
                nanos: 0,
            }),
            cutover_requested: false,
            source_stopped_at: None,
            destination_ready_at: None,
            downtime: None,
        }),
    }
}

#[test]
fn progress_round_trips_field_by_field() {
    let progress = sample_progress();
    let bytes = progress.encode_to_vec();
    let decoded = Progress::decode(bytes.as_slice()).expect("decode Progress");

    assert_eq!(decoded, progress);
    assert_eq!(decoded.step, "transfer-volumes");
    assert_eq!(decoded.objects_done, 12);
    assert_eq!(decoded.objects_total, 40);
    assert_eq!(decoded.files_done, 1_234);
    assert_eq!(decoded.files_total, 5_000);
    assert_eq!(decoded.bytes_read, 7 << 30);
    assert_eq!(decoded.bytes_new, 3 << 30);
    assert_eq!(decoded.bytes_uploaded, 1 << 30);
    assert_eq!(decoded.bytes_total, 20 << 30);
    assert_eq!(decoded.rate_bytes_per_second, 250 << 20);
    assert_eq!(decoded.eta.map(|d| d.seconds), Some(52));
}

#[test]
fn job_round_trips_field_by_field() {
    let job = sample_job();
    let decoded = Job::decode(job.encode_to_vec().as_slice()).expect("decode Job");

    assert_eq!(decoded, job);
    assert_eq!(decoded.id, "job-0001");
    assert_eq!(decoded.kind(), JobKind::Migration);
    assert_eq!(decoded.state(), JobState::Running);
    assert_eq!(
        decoded.created_at.as_ref().map(|t| t.seconds),
        Some(1_760_000_000)
    );
    assert_eq!(decoded.created_at.as_ref().map(|t| t.nanos), Some(5));
    assert_eq!(
        decoded.updated_at.as_ref().map(|t| t.seconds),
        Some(1_760_000_042)
    );
    let steps: Vec<(&str, StepState)> = decoded
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.state()))
        .collect();
    assert_eq!(
        steps,
        [
            ("capture", StepState::Succeeded),
            ("transfer-volumes", StepState::Running)
        ]
    );
    assert_eq!(decoded.steps[1].finished_at, None);
    assert_eq!(
        decoded.destination.and_then(|d| d.target),
        Some(cluster_ref::Target::PairId("pair-7".to_owned()))
    );
    assert_eq!(decoded.progress, Some(sample_progress()));
}

#[test]
fn watch_job_events_round_trip_each_kind() {
    let report = JobReport {
        job_id: "job-0001".to_owned(),
        state: JobState::PartiallySucceeded.into(),
        objects: vec![ObjectOutcome {
            object: Some(ObjectRef {
                api_version: "v1".to_owned(),
                kind: "ServiceAccount".to_owned(),
                namespace: "shop".to_owned(),
                name: "default".to_owned(),
            }),
            action: ObjectAction::Excluded.into(),
            reason: "service accounts are never moved".to_owned(),
            ..Default::default()
        }],
        volumes: vec![VolumeOutcome {
            namespace: "shop".to_owned(),
            pvc_name: "data-db-0".to_owned(),
            result: VolumeResult::Failed.into(),
            error: Some(ErrorDetail {
                code: ErrorCode::MissingPrerequisite.into(),
                message: "storage class fast-ssd does not exist".to_owned(),
                cluster: "dest".to_owned(),
                hint: "map it with --storage-class-map fast-ssd=standard".to_owned(),
                object: None,
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let events = [
        job_event::Event::Snapshot(Box::new(sample_job())),
        job_event::Event::Step(sample_job().steps[0].clone()),
        job_event::Event::Progress(sample_progress()),
        job_event::Event::Report(Box::new(report)),
    ];
    for event in events {
        let message = JobEvent {
            job_id: "job-0001".to_owned(),
            time: Some(Timestamp {
                seconds: 1,
                nanos: 2,
            }),
            event: Some(event),
        };
        let decoded = JobEvent::decode(message.encode_to_vec().as_slice()).expect("decode event");
        assert_eq!(decoded, message);
    }
}

/// Field numbers are the wire contract with agents and CLIs of other versions: renumbering
/// a field must fail here, not in production.
#[test]
fn wire_numbers_are_stable() {
    // Field 8 (bytes_uploaded), varint: key (8 << 3) | 0.
    let only_uploaded = Progress {
        bytes_uploaded: 5,
        ..Default::default()
    };
    assert_eq!(only_uploaded.encode_to_vec(), [0x40, 5]);

    // Field 3 (state), varint, RUNNING = 2.
    let only_state = Job {
        state: JobState::Running.into(),
        ..Default::default()
    };
    assert_eq!(only_state.encode_to_vec(), [0x18, 2]);

    // Enum numbers of final states.
    assert_eq!(JobState::Succeeded as i32, 4);
    assert_eq!(JobState::Failed as i32, 6);
    assert_eq!(JobState::Cancelled as i32, 7);
}

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

/// service name -> method name -> (client streaming, server streaming)
fn services(fds: &FileDescriptorSet) -> BTreeMap<String, BTreeMap<String, (bool, bool)>> {
    let mut services = BTreeMap::new();
    for file in &fds.file {
        for service in &file.service {
            let methods = service
                .method
                .iter()
                .map(|m| {
                    (
                        m.name().to_owned(),
                        (m.client_streaming(), m.server_streaming()),
                    )
                })
                .collect();
            services.insert(format!("{}.{}", file.package(), service.name()), methods);
        }
    }
    services
}

#[test]
fn descriptor_set_has_every_service_and_method() {
    let expected: &[(&str, &[&str])] = &[
        (
            "ferry.v1.PairingService",
            &[
                "CreatePairingToken",
                "AcceptPairingToken",
                "ListPairs",
                "GetPair",
                "DeletePair",
                "CheckPair",
                "RedeemPairingToken",
                "ForgetPair",
                "RenewPairCredential",
            ],
        ),
        (
            "ferry.v1.CatalogService",
            &[
                "CreateProfile",
                "GetProfile",
                "ListProfiles",
                "DeleteProfile",
                "ListApplications",
                "ListRestorePoints",
                "GetRestorePoint",
                "RebuildIndex",
                "LabelRestorePoint",
                "CheckProfile",
                "CreateImportKey",
                "GetImportKey",
                "IssueMigrationToken",
                "PruneRepository",
            ],
        ),
        (
            "ferry.v1.TransferService",
            &[
                "StartMigration",
                "StartRestore",
                "StartExport",
                "GetJob",
                "ListJobs",
                "WatchJob",
                "CancelJob",
                "Activate",
                "Cutover",
            ],
        ),
        (
            "ferry.v1.SchedulerService",
            &[
                "CreateSchedule",
                "ListSchedules",
                "GetSchedule",
                "SuspendSchedule",
                "ResumeSchedule",
                "DeleteSchedule",
                "RunNow",
                "ListRuns",
            ],
        ),
        (
            "ferry.v1.AgentService",
            &["Backup", "Restore", "Verify", "Cancel", "GetInfo"],
        ),
        ("ferry.v1.VersionService", &["GetVersion"]),
        ("ferry.v1.CatalogInternalService", &["ResolveProfile"]),
        ("ferry.v1.PairingInternalService", &["ResolvePair"]),
    ];
    let services = services(&descriptor_set());

    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    let expected_names: BTreeSet<&str> = expected.iter().map(|(s, _)| *s).collect();
    assert_eq!(names, expected_names);

    for (service, methods) in expected {
        let got: BTreeSet<&str> = services[*service].keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = methods.iter().copied().collect();
        assert_eq!(got, want, "methods of {service}");
    }
}

#[test]
fn long_operations_stream_from_the_server_and_the_rest_are_unary() {
    let streaming: BTreeSet<(&str, &str)> = [
        ("ferry.v1.TransferService", "WatchJob"),
        ("ferry.v1.AgentService", "Backup"),
        ("ferry.v1.AgentService", "Restore"),
        ("ferry.v1.AgentService", "Verify"),
        ("ferry.v1.CatalogService", "RebuildIndex"),
    ]
    .into_iter()
    .collect();

    let services = services(&descriptor_set());
    for (service, methods) in &services {
        for (method, &(client_streaming, server_streaming)) in methods {
            assert!(
                !client_streaming,
                "{service}/{method} must not stream from the client"
            );
            assert_eq!(
                server_streaming,
                streaming.contains(&(service.as_str(), method.as_str())),
                "server streaming of {service}/{method}"
            );
        }
    }
    for (service, method) in &streaming {
        assert!(
            services[*service].contains_key(*method),
            "{service}/{method} exists"
        );
    }
}

#[test]
fn descriptor_set_carries_imports_for_reflection() {
    let fds = descriptor_set();
    let files: BTreeSet<&str> = fds.file.iter().map(|f| f.name()).collect();
    for name in [
        "ferry/v1/common.proto",
        "ferry/v1/pairing.proto",
        "ferry/v1/catalog.proto",
        "ferry/v1/transfer.proto",
        "ferry/v1/scheduler.proto",
        "ferry/v1/agent.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/duration.proto",
    ] {
        assert!(
            files.contains(name),
            "{name} in FILE_DESCRIPTOR_SET: {files:?}"
        );
    }
}

// Paths into FileDescriptorProto / DescriptorProto / ServiceDescriptorProto /
// EnumDescriptorProto, as used by SourceCodeInfo.Location.path.
const FILE_MESSAGE: i32 = 4;
const FILE_ENUM: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED: i32 = 3;
const MESSAGE_ENUM: i32 = 4;
const MESSAGE_ONEOF: i32 = 8;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

fn index(i: usize) -> i32 {
    i32::try_from(i).expect("index fits in i32")
}

/// Every documented element: (path, human name) pairs.
fn elements(fds: &FileDescriptorSet) -> Vec<(String, Vec<i32>, String)> {
    fn message(
        out: &mut Vec<(Vec<i32>, String)>,
        path: Vec<i32>,
        name: String,
        m: &DescriptorProto,
    ) {
        for (i, f) in m.field.iter().enumerate() {
            let mut p = path.clone();
            p.extend([MESSAGE_FIELD, index(i)]);
            out.push((p, format!("{name}.{}", f.name())));
        }
        for (i, o) in m.oneof_decl.iter().enumerate() {
            // `optional` fields get a synthetic oneof that has no source of its own.
            let synthetic = m
                .field
                .iter()
                .any(|f| f.oneof_index == Some(index(i)) && f.proto3_optional());
            if synthetic {
                continue;
            }
            let mut p = path.clone();
            p.extend([MESSAGE_ONEOF, index(i)]);
            out.push((p, format!("{name}.{} (oneof)", o.name())));
        }
        for (i, e) in m.enum_type.iter().enumerate() {
            let mut p = path.clone();
            p.extend([MESSAGE_ENUM, index(i)]);
            out.push((p, format!("{name}.{}", e.name())));
        }
        for (i, nested) in m.nested_type.iter().enumerate() {
            // Map entries are synthetic and carry no comments.
            if nested.options.as_ref().is_some_and(|o| o.map_entry()) {
                continue;
            }
            let mut p = path.clone();
            p.extend([MESSAGE_NESTED, index(i)]);
            let nested_name = format!("{name}.{}", nested.name());
            out.push((p.clone(), nested_name.clone()));
            message(out, p, nested_name, nested);
        }
    }

    let mut all = Vec::new();
    for file in fds.file.iter().filter(|f| f.package() == "ferry.v1") {
        let mut out = Vec::new();
        for (i, m) in file.message_type.iter().enumerate() {
            let path = vec![FILE_MESSAGE, index(i)];
            out.push((path.clone(), m.name().to_owned()));
            message(&mut out, path, m.name().to_owned(), m);
        }
        for (i, e) in file.enum_type.iter().enumerate() {
            out.push((vec![FILE_ENUM, index(i)], e.name().to_owned()));
            for (j, v) in e.value.iter().enumerate() {
                out.push((
                    vec![FILE_ENUM, index(i), ENUM_VALUE, index(j)],
                    v.name().to_owned(),
                ));
            }
        }
        for (i, s) in file.service.iter().enumerate() {
            out.push((vec![FILE_SERVICE, index(i)], s.name().to_owned()));
            for (j, m) in s.method.iter().enumerate() {
                out.push((
                    vec![FILE_SERVICE, index(i), SERVICE_METHOD, index(j)],
                    format!("{}/{}", s.name(), m.name()),
                ));
            }
        }
        all.extend(
            out.into_iter()
                .map(|(path, name)| (file.name().to_owned(), path, name)),
        );
    }
    all
}

#[test]
fn every_message_field_enum_and_method_is_documented() {
    let fds = descriptor_set();
    let mut commented: BTreeSet<(String, Vec<i32>)> = BTreeSet::new();
    for file in fds.file.iter().filter(|f| f.package() == "ferry.v1") {
        let info = file
            .source_code_info
            .as_ref()
            .expect("descriptor set keeps source info (needed for comments)");
        for location in &info.location {
            if !location.leading_comments().trim().is_empty() {
                commented.insert((file.name().to_owned(), location.path.clone()));
            }
        }
    }

    let elements = elements(&fds);
    assert!(
        elements.len() > 300,
        "only {} elements found",
        elements.len()
    );
    let undocumented: Vec<String> = elements
        .into_iter()
        .filter(|(file, path, _)| !commented.contains(&(file.clone(), path.clone())))
        .map(|(file, _, name)| format!("{file}: {name}"))
        .collect();
    assert!(undocumented.is_empty(), "undocumented: {undocumented:#?}");
}
