use super::*;

#[test]
fn names_are_dns_labels_and_never_look_like_ids() {
    for ok in ["prod-to-dr", "a", "pair-0123abcd", &"x".repeat(63)] {
        validate_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "",
        "Prod",
        "-a",
        "a-",
        "a_b",
        "0123456789abcdef0123456789abcdef",
        &"x".repeat(64),
    ] {
        assert!(validate_name(bad).is_err(), "{bad:?} accepted");
    }
}
