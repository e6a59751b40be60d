//! The S3 server's read-only user reads and lists the bucket and cannot write to it.

use aws_sdk_s3::primitives::ByteStream;
use ferry_testenv::{EnvSpec, Lifetime, READONLY_USER, S3Info, TestEnv};

fn as_reader(s3: &S3Info) -> S3Info {
    let reader = s3.readonly.clone().expect("a read-only user");
    S3Info {
        access_key: reader.access_key,
        secret_key: reader.secret_key,
        ..s3.clone()
    }
}

#[tokio::test]
async fn the_readonly_user_reads_and_lists_but_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = EnvSpec {
        clusters: Vec::new(),
        s3: true,
        nodes_per_cluster: 0,
        previous_minor: None,
    };
    let env = TestEnv::start(&spec, dir.path(), Lifetime::WithThisProcess)
        .await
        .expect("S3 server");
    let s3 = env.s3().expect("S3 info");
    let reader = s3.readonly.as_ref().expect("a read-only user");
    assert_eq!(reader.access_key, READONLY_USER);
    assert!(!format!("{s3:?}").contains(&reader.secret_key));
    assert!(
        s3.env_lines()
            .contains("FERRY_S3_READONLY_ACCESS_KEY_ID=reader")
    );

    let admin = s3.client();
    admin
        .put_object()
        .bucket(&s3.bucket)
        .key("exports/object")
        .body(ByteStream::from_static(b"written by the source"))
        .send()
        .await
        .expect("the root user writes");

    let read_only = as_reader(s3).client();
    let got = read_only
        .get_object()
        .bucket(&s3.bucket)
        .key("exports/object")
        .send()
        .await
        .expect("the reader reads")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert_eq!(got.as_ref(), b"written by the source");
    let listed = read_only
        .list_objects_v2()
        .bucket(&s3.bucket)
        .prefix("exports/")
        .send()
        .await
        .expect("the reader lists");
    assert_eq!(listed.key_count(), Some(1));

    let denied = read_only
        .put_object()
        .bucket(&s3.bucket)
        .key("exports/intruder")
        .body(ByteStream::from_static(b"must not land"))
        .send()
        .await
        .expect_err("the reader cannot write");
    let code = denied.as_service_error().and_then(|e| {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        e.code().map(str::to_owned)
    });
    assert_eq!(code.as_deref(), Some("AccessDenied"), "{denied:?}");
    let denied = read_only
        .delete_object()
        .bucket(&s3.bucket)
        .key("exports/object")
        .send()
        .await;
    assert!(denied.is_err(), "the reader cannot delete");
}
