//! The agent's server answers grpcurl, the usual gRPC command-line client (built from
//! its Go module by `make testenv`): reflection lists and describes the services, a
//! call works from JSON, and an error shows Ferry's message, not a details mismatch.

use ferry_agent::{AgentConfig, ProfileSource};
use tokio_util::sync::CancellationToken;

use ferry_testenv::run_grpcurl as grpcurl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = AgentConfig {
        node_name: "node-reflect".into(),
        profiles: ProfileSource::Dir(dir.path().to_path_buf()),
        allowed_roots: vec![dir.path().to_path_buf()],
        max_concurrent_operations: 1,
        shutdown_grace: std::time::Duration::from_secs(1),
        volume_root: None,
        kubelet: Default::default(),
        access: ferry_agent::AgentAccess::Unchecked,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ferry_agent::serve(config, listener, shutdown.clone()));

    let checks = tokio::task::spawn_blocking(move || {
        let (ok, listed) = grpcurl(&["-plaintext", &addr, "list"]);
        assert!(ok, "{listed}");
        for service in [
            "ferry.v1.AgentService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(
                listed.lines().any(|l| l == service),
                "{service} not listed:\n{listed}"
            );
        }

        let (ok, described) = grpcurl(&["-plaintext", &addr, "describe", "ferry.v1.AgentService"]);
        assert!(ok, "{described}");
        assert!(described.contains("rpc Backup"), "{described}");
        assert!(
            described.contains("stream .ferry.v1.BackupEvent"),
            "{described}"
        );

        let (ok, info) = grpcurl(&[
            "-plaintext",
            "-d",
            "{}",
            &addr,
            "ferry.v1.AgentService/GetInfo",
        ]);
        assert!(ok, "{info}");
        assert!(info.contains("\"nodeName\": \"node-reflect\""), "{info}");

        let (ok, health) = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
        assert!(ok && health.contains("SERVING"), "{health}");

        let (ok, err) = grpcurl(&[
            "-plaintext",
            "-d",
            r#"{"operationId": "x", "path": "relative/dir", "repository": {"profile": "p"}}"#,
            &addr,
            "ferry.v1.AgentService/Backup",
        ]);
        assert!(!ok, "a relative path must fail:\n{err}");
        assert!(
            err.contains("InvalidArgument") && err.contains("relative"),
            "{err}"
        );
        assert!(
            !err.contains("mismatch"),
            "details must be a google.rpc.Status:\n{err}"
        );
    });
    checks.await.expect("grpcurl checks");
    shutdown.cancel();
    server.await.expect("join").expect("clean shutdown");
}
