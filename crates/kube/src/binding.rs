//! Which volume a claim may move: only the one bound to it. A claim's `spec.volumeName`
//! is written by whoever creates the claim, so a namespace user can name any
//! PersistentVolume there, someone else's included; the volume's `claimRef` is
//! written by the binder. A volume moves only when both agree: the claim is Bound and
//! the volume's claimRef names that claim by namespace, name and uid.

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::Value;

/// Why a claim may not move the volume it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimRefusal {
    /// The claim is not Bound (a claim naming a volume bound elsewhere stays Pending).
    #[error(
        "claim {namespace}/{claim} names volume {volume} but is {phase}, not Bound: a claim \
         moves only the volume bound to it; wait until it binds, or migrate with \
         skip_volume_data"
    )]
    NotBound {
        namespace: String,
        claim: String,
        volume: String,
        phase: String,
    },
    /// The volume's claimRef names another claim, or an earlier claim of that name.
    #[error(
        "claim {namespace}/{claim} names volume {volume}, which belongs to {owner}: a claim \
         moves only the volume bound to it, so Ferry refused to move {volume}; bind the \
         claim to a volume of its own"
    )]
    NotItsVolume {
        namespace: String,
        claim: String,
        volume: String,
        /// Who the volume's claimRef names ("no claim" when it names none).
        owner: String,
    },
}

/// Checks that `claim` (a PersistentVolumeClaim in `namespace`) is Bound and that `pv`,
/// the volume its `spec.volumeName` names, points back at it.
pub fn check_claim_binding(
    namespace: &str,
    claim: &DynamicObject,
    pv: &PersistentVolume,
) -> Result<(), ClaimRefusal> {
    let name = claim.name_any();
    let volume = pv.name_any();
    let phase = claim
        .data
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("without a phase");
    if phase != "Bound" {
        return Err(ClaimRefusal::NotBound {
            namespace: namespace.into(),
            claim: name,
            volume,
            phase: phase.into(),
        });
    }
    let claim_uid = claim.uid().unwrap_or_default();
    let owner = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let points_back = owner.is_some_and(|r| {
        r.namespace.as_deref() == Some(namespace)
            && r.name.as_deref() == Some(name.as_str())
            && !claim_uid.is_empty()
            && r.uid.as_deref() == Some(claim_uid.as_str())
    });
    if points_back {
        return Ok(());
    }
    let owner = match owner {
        None => "no claim".to_owned(),
        Some(r) => {
            let (ns, n) = (
                r.namespace.as_deref().unwrap_or(""),
                r.name.as_deref().unwrap_or(""),
            );
            if ns == namespace && n == name {
                format!(
                    "an earlier claim {ns}/{n} (uid {}, this one is {claim_uid})",
                    r.uid.as_deref().unwrap_or("unset")
                )
            } else {
                format!("claim {ns}/{n}")
            }
        }
    };
    Err(ClaimRefusal::NotItsVolume {
        namespace: namespace.into(),
        claim: name,
        volume,
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(phase: &str, uid: &str) -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "shop", "uid": uid},
            "spec": {"volumeName": "pv-1"}, "status": {"phase": phase}}))
        .expect("claim")
    }

    fn pv(claim_ref: Value) -> PersistentVolume {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pv-1"}, "spec": {"claimRef": claim_ref}}))
        .expect("pv")
    }

    #[test]
    fn only_a_bound_claim_the_volume_points_back_at_moves_it() {
        let mine = pv(json!({"namespace": "shop", "name": "data", "uid": "u1"}));
        assert_eq!(
            check_claim_binding("shop", &claim("Bound", "u1"), &mine),
            Ok(())
        );
        let err = check_claim_binding("shop", &claim("Pending", "u1"), &mine).unwrap_err();
        assert!(matches!(err, ClaimRefusal::NotBound { .. }), "{err}");
        let err = check_claim_binding("shop", &claim("Bound", "u2"), &mine).unwrap_err();
        assert!(
            err.to_string().contains("an earlier claim shop/data"),
            "{err}"
        );
        let bobs = pv(json!({"namespace": "bob", "name": "data", "uid": "u1"}));
        let err = check_claim_binding("shop", &claim("Bound", "u1"), &bobs).unwrap_err();
        assert!(
            err.to_string().contains("belongs to claim bob/data"),
            "{err}"
        );
        let none: PersistentVolume = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-1"}}),
        )
        .expect("pv");
        let err = check_claim_binding("shop", &claim("Bound", "u1"), &none).unwrap_err();
        assert!(err.to_string().contains("belongs to no claim"), "{err}");
    }
}
