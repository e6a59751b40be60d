use std::collections::BTreeMap;

use ferry_proto::v1::{CreateProfileRequest, ProfileKind};

use super::secrets::{S3Credentials, credential_value};
use super::*;

fn request() -> CreateProfileRequest {
    CreateProfileRequest {
        name: "prod".into(),
        kind: ProfileKind::Export as i32,
        backend: StorageBackend::S3 as i32,
        endpoint: "http://127.0.0.1:9000/".into(),
        bucket: "ferry".into(),
        prefix: "/a/b/".into(),
        region: String::new(),
        credentials_secret: Some(SecretRef {
            namespace: String::new(),
            name: "s3".into(),
        }),
        verify_tls: None,
        encryption_key_secret: Some(SecretRef {
            namespace: "keys".into(),
            name: "repo-key".into(),
        }),
        create_repository: true,
        migration_token: String::new(),
        expected_signer: String::new(),
        unsafe_skip_signer_verification: false,
        namespace: String::new(),
    }
}

/// Why `request()` changed by `f` is refused.
fn refused(f: &dyn Fn(&mut CreateProfileRequest)) -> String {
    let mut r = request();
    f(&mut r);
    validate(&r, "ferry-system")
        .expect_err("must fail")
        .to_string()
}

#[test]
fn requests_are_validated_and_normalised() {
    let p = validate(&request(), "ferry-system").expect("valid").record;
    assert_eq!(p.endpoint, "http://127.0.0.1:9000");
    assert_eq!(p.prefix, "a/b");
    assert!(p.verify_tls, "TLS verification is on by default");
    assert_eq!(
        p.credentials.as_ref().map(|s| s.namespace.as_str()),
        Some("ferry-system")
    );
    assert_eq!(p.key_secret.namespace, "keys");
    assert_eq!(location(&p), "s3:http://127.0.0.1:9000/ferry/a/b");

    assert!(refused(&|r| r.name = "Prod!".into()).contains("profile name"));
    assert!(refused(&|r| r.endpoint = "ftp://x".into()).contains("endpoint"));
    assert!(refused(&|r| r.endpoint = "http://h:1/bucket".into()).contains("path"));
    assert!(refused(&|r| r.bucket = "B".into()).contains("bucket"));
    assert!(refused(&|r| r.prefix = "a/../b".into()).contains("prefix"));
    assert!(
        refused(&|r| {
            r.encryption_key_secret = None;
            r.create_repository = false;
        })
        .contains("encryption_key_secret")
    );
    assert!(refused(&|r| r.credentials_secret = None).contains("credentials_secret"));
    assert!(refused(&|r| r.kind = 0).contains("kind"));
    assert!(refused(&|r| r.kind = ProfileKind::Import as i32).contains("import profile"));

    // No key Secret and a new repository: a key is generated into "<name>-key".
    let mut generated = request();
    generated.encryption_key_secret = None;
    let new = validate(&generated, "ferry-system").expect("generated key");
    assert!(new.generate_key);
    assert_eq!(new.record.key_secret.to_string(), "ferry-system/prod-key");
    generated.kind = ProfileKind::Import as i32;
    generated.create_repository = false;
    assert!(
        validate(&generated, "x").is_err(),
        "import profiles name their key"
    );

    // TLS verification off is allowed, with a warning.
    let mut insecure = request();
    insecure.endpoint = "https://s3.local".into();
    insecure.verify_tls = Some(false);
    let new = validate(&insecure, "ferry-system").expect("verify_tls off");
    assert!(!new.record.verify_tls);
    assert!(
        new.warnings.iter().any(|w| w.contains("TLS")),
        "{:?}",
        new.warnings
    );
    assert!(
        validate(&request(), "x")
            .expect("valid")
            .warnings
            .is_empty()
    );

    let mut local = request();
    local.backend = StorageBackend::Local as i32;
    local.endpoint.clear();
    local.credentials_secret = None;
    local.bucket = "/srv/repos".into();
    let p = validate(&local, "ferry-system").expect("local").record;
    assert_eq!(location(&p), "/srv/repos/a/b");
    local.bucket = "relative".into();
    assert!(validate(&local, "x").is_err());
}

/// The checks a request with a migration token gets, and an export profile's binding.
#[test]
fn token_requests_name_no_location_and_pin_their_signer() {
    // A token names the location: the request may not.
    let mut token = request();
    token.migration_token = "token".into();
    token.kind = ProfileKind::Import as i32;
    token.create_repository = false;
    let err = check_token_request(&token)
        .expect_err("location given")
        .to_string();
    assert!(err.contains("endpoint") && err.contains("bucket"), "{err}");
    token.backend = 0;
    token.endpoint.clear();
    token.bucket.clear();
    token.prefix.clear();
    // The signer is pinned by default: a token without a pin needs the unsafe flag.
    let err = check_token_request(&token).expect_err("no pinned signer");
    assert!(
        err.to_string().contains("expected_signer")
            && err
                .to_string()
                .contains("--unsafe-skip-signer-verification"),
        "{err}"
    );
    // A pinned signer must be a fingerprint, and only pins tokens.
    let signer = ferry_token::SigningKey::generate()
        .expect("signing key")
        .public_key()
        .fingerprint();
    token.expected_signer = format!(" {signer}\n");
    check_token_request(&token).expect("a fingerprint, copy-paste whitespace and all");
    let options = token_open_options(&token).expect("options");
    assert_eq!(options.expected_signer, Some(signer));
    token.expected_signer = "SHA256:nope".into();
    let err = check_token_request(&token).expect_err("not a fingerprint");
    assert!(err.to_string().contains("expected_signer"), "{err}");
    token.unsafe_skip_signer_verification = true;
    let err = check_token_request(&token).expect_err("a pin and the skip");
    assert!(err.to_string().contains("not both"), "{err}");
    token.expected_signer.clear();
    check_token_request(&token).expect("location from the token, any signer");
    assert_eq!(
        token_open_options(&token).expect("options").expected_signer,
        None
    );
    assert!(
        refused(&|r| r.expected_signer = "SHA256:x".into()).contains("migration_token"),
        "expected_signer without a token"
    );
    assert!(
        refused(&|r| r.unsafe_skip_signer_verification = true).contains("migration_token"),
        "the skip without a token"
    );
    token.kind = ProfileKind::Export as i32;
    assert!(check_token_request(&token).is_err());

    // Only export profiles are bound to a namespace, and only to a namespace name.
    assert!(
        refused(&|r| {
            r.kind = ProfileKind::Migration as i32;
            r.namespace = "shop".into();
        })
        .contains("EXPORT")
    );
    let mut bound = request();
    bound.namespace = "shop".into();
    assert_eq!(
        validate(&bound, "x").expect("bound").record.namespace,
        "shop"
    );
    bound.namespace = "Shop!".into();
    assert!(validate(&bound, "x").is_err());
}

#[tokio::test]
async fn the_agent_file_carries_the_tls_switch_and_the_agent_honours_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sealer = ferry_store::SecretBox::load_or_create(dir.path()).expect("secret key");
    let agent_dir = dir.path().join("agent-profiles");
    std::fs::create_dir_all(&agent_dir).expect("agent dir");
    let material = Material {
        s3: Some(S3Credentials {
            access_key_id: "id".into(),
            secret_access_key: "s3-secret".into(),
            session_token: None,
        }),
        key: b"repository key".to_vec(),
    };
    let agents = ferry_profile::ProfileSource::Dir(agent_dir.clone());
    for (name, verify_tls) in [("checked", None), ("selfsigned", Some(false))] {
        let mut req = request();
        req.name = name.into();
        req.endpoint = "https://s3.test:9443".into();
        req.verify_tls = verify_tls;
        let record = validate(&req, "ferry-system").expect("valid").record;
        let yaml = agent_profile_yaml(&record, &material, &sealer).expect("agent file");
        assert_eq!(
            yaml.contains("verifyTls: false"),
            verify_tls == Some(false),
            "{yaml}"
        );
        std::fs::write(ferry_profile::file_path(&agent_dir, name), yaml).expect("write");
        let loaded = agents.get(name).await.expect("the agent reads the file");
        assert_eq!(loaded.verify_tls, verify_tls.unwrap_or(true), "{name}");
    }
}

#[test]
fn credential_spellings_must_agree() {
    let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    let d = data(&[("accessKeyId", "AK\n")]);
    assert_eq!(
        credential_value(&d, ACCESS_KEY_ID_KEYS, true),
        Ok(Some("AK".into()))
    );
    let d = data(&[("access_key_id", "A"), ("accessKeyId", "B")]);
    assert!(credential_value(&d, ACCESS_KEY_ID_KEYS, true).is_err());
    let d = data(&[("other", "x")]);
    let err = credential_value(&d, ACCESS_KEY_ID_KEYS, true).expect_err("missing");
    assert!(
        err.contains("access_key_id") && err.contains("other"),
        "{err}"
    );
    assert_eq!(credential_value(&d, SESSION_TOKEN_KEYS, false), Ok(None));
}
