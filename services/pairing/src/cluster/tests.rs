use super::credential::credential_names;
use super::*;

#[test]
fn the_role_covers_every_key_access() {
    let rules = migrator_rules(&["example.com".into()], false);
    for access in KEY_ACCESS {
        let ok = rules.iter().any(|r| {
            r.api_groups
                .as_ref()
                .is_some_and(|g| g.iter().any(|g| g == access.group))
                && r.resources
                    .as_ref()
                    .is_some_and(|rs| rs.iter().any(|x| x == access.resource || x == "*"))
                && r.verbs.iter().any(|v| v == access.verb)
        });
        assert!(ok, "ferry-migrator lacks {}", access.describe());
    }
    assert!(rules.iter().any(|r| {
        r.api_groups
            .as_ref()
            .is_some_and(|g| g.contains(&"example.com".to_string()))
    }));
    assert_eq!(migrator_rules(&[], false).len() + 1, rules.len());
    let impersonates = |rules: &[k8s_openapi::api::rbac::v1::PolicyRule]| {
        rules
            .iter()
            .any(|r| r.verbs.iter().any(|v| v == "impersonate"))
    };
    assert!(!impersonates(&rules), "impersonation without trust");
    assert!(impersonates(&migrator_rules(&[], true)));
}

#[test]
fn credential_names_are_short_and_stable() {
    let c = credential_names("ferry-system", "0123456789abcdef0123456789abcdef");
    assert_eq!(c.service_account, "ferry-pair-0123456789");
    assert_eq!(c.secret.as_deref(), Some("ferry-pair-0123456789-token"));
    assert_eq!(c.binding, c.service_account);
}
