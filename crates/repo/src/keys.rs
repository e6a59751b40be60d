//! Key slots: the master key wrapped by several user keys (restic's `key add`), so a
//! user key can be changed without re-encrypting anything, and a wrong key's error can
//! name the keys that would work.
//!
//! Every slot lives in the one `config` object, which a key change rewrites with one
//! atomic put: a crash leaves either the old or the new config, and both open with
//! every key the old one listed but the one being removed. See FORMAT.md, "Keys".

use std::fmt;

use bytes::Bytes;
use time::OffsetDateTime;

use crate::backend::DynBackend;
use crate::config::{CONFIG_KEY, Config, WrappedKey};
use crate::crypto;
use crate::error::{Error, Result};
use crate::lock::{DEFAULT_LOCK_TTL, LockGuard, LockKind};
use crate::repository::{Repository, derive_kek, read_config};

/// The `purpose` of the lock a key change holds. Key changes exclude each other by it
/// (two at once could each write a config missing the other's change, and so bring
/// back a removed key), but not backups, which never read the config after opening.
pub const KEY_CHANGE_PURPOSE: &str = "change keys";

/// Longest label accepted, in characters: labels are shown in every wrong-key error.
const MAX_LABEL_CHARS: usize = 100;

/// The label of the key a repository was made with, when its slot records none.
pub(crate) const INITIAL_LABEL: &str = "initial";

/// One user key of a repository, as listed and as named in [`Error::WrongKey`]. Holds
/// nothing secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// `k-` and 16 hex characters. `None` only for the key of a repository made before
    /// key slots, when listed to someone who did not open it with that key.
    pub fingerprint: Option<String>,
    /// The label given when the key was added; "initial" for the first key.
    pub label: String,
    /// When the key was added (for the first key of an older repository: when the
    /// repository was made).
    pub created: OffsetDateTime,
    /// Whether this is the slot readers from before key slots use.
    pub primary: bool,
}

impl fmt::Display for KeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let added =
            crate::lock::rfc3339(self.created.replace_nanosecond(0).unwrap_or(self.created));
        match &self.fingerprint {
            Some(fp) => write!(f, "{fp} {:?} added {added}", self.label),
            None => write!(
                f,
                "{:?} added {added} (fingerprint not recorded: the repository predates key \
                 fingerprints)",
                self.label
            ),
        }
    }
}

/// What opening a key slot yields.
pub(crate) struct Opened {
    pub master: [u8; 32],
    /// The fingerprint of the key that opened it.
    pub fingerprint: String,
    /// The slot's sealed hex (not secret), to recognise a slot that records no
    /// fingerprint when the config is read again.
    pub sealed: String,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Unwraps the master key with `kek`: first from the slot that records the key's
/// fingerprint, then from every other slot, because a repository made before key
/// slots records none. The argon2id run is shared by all slots (one KDF per config),
/// so each extra attempt costs one AES-GCM open.
pub(crate) fn open_slots(config: &Config, kek: &[u8; 32], repo: &str) -> Result<Opened> {
    let fp = crypto::fingerprint(kek);
    let mut order: Vec<&WrappedKey> = config.key_slots().collect();
    order.sort_by_key(|s| s.fingerprint.as_deref() != Some(fp.as_str()));
    let mut own_slot_failed = false;
    for slot in order {
        let is_own = slot.fingerprint.as_deref() == Some(fp.as_str());
        let Ok(wrapped) = hex::decode(&slot.sealed) else {
            // One damaged slot must not lock out the holders of the others.
            tracing::warn!(slot = ?slot.fingerprint, "a key slot in the config is not hex; skipped");
            own_slot_failed |= is_own;
            continue;
        };
        match crypto::unwrap_master_key(kek, &wrapped)? {
            Some(master) => {
                return Ok(Opened {
                    master,
                    fingerprint: fp,
                    sealed: slot.sealed.clone(),
                });
            }
            None => own_slot_failed |= is_own,
        }
    }
    if own_slot_failed {
        return Err(Error::corrupt(
            format!("config in {repo}"),
            format!(
                "the key slot {fp} is this key's, but its wrapped master key does not \
                 verify (the config was altered); open the repository with another of its keys"
            ),
        ));
    }
    Err(Error::WrongKey {
        repo: repo.to_string(),
        fingerprint: fp,
        keys: key_infos(config, None),
    })
}

/// Describes every slot; `own` (fingerprint and sealed hex of the slot this process
/// opened) fills in the fingerprint of that slot when the config does not record it.
fn key_infos(config: &Config, own: Option<(&str, &str)>) -> Vec<KeyInfo> {
    config
        .key_slots()
        .enumerate()
        .map(|(i, s)| KeyInfo {
            fingerprint: s.fingerprint.clone().or_else(|| {
                own.filter(|(_, sealed)| *sealed == s.sealed)
                    .map(|(fp, _)| fp.to_string())
            }),
            label: s
                .label
                .clone()
                .unwrap_or_else(|| if i == 0 { INITIAL_LABEL } else { "" }.to_string()),
            created: s.created.unwrap_or(config.created),
            primary: i == 0,
        })
        .collect()
}

fn list(keys: &[KeyInfo]) -> String {
    keys.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Labels appear in terminals and error messages: printable and short.
fn check_label(label: &str) -> Result<()> {
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(Error::invalid(
            "key label",
            format!("longer than {MAX_LABEL_CHARS} characters"),
        ));
    }
    if label.chars().any(char::is_control) {
        return Err(Error::invalid(
            "key label",
            "contains control characters; use printable text",
        ));
    }
    Ok(())
}

/// A new slot wrapping `master` under `kek`.
pub(crate) fn new_slot(
    kek: &[u8; 32],
    master: &[u8; 32],
    label: &str,
    created: OffsetDateTime,
) -> Result<WrappedKey> {
    Ok(WrappedKey {
        algorithm: "aes-256-gcm".into(),
        sealed: hex::encode(crypto::wrap_master_key(kek, master)?),
        fingerprint: Some(crypto::fingerprint(kek)),
        label: Some(label.to_string()),
        created: Some(created),
    })
}

/// Stores a config, replacing the one there (one atomic put: see the module comment).
pub(crate) async fn write_config(backend: &DynBackend, config: &Config) -> Result<()> {
    let json = serde_json::to_vec_pretty(config)
        .map_err(|e| Error::Internal(format!("serializing config: {e}")))?;
    backend.put(CONFIG_KEY, Bytes::from(json)).await?;
    Ok(())
}

impl Repository {
    /// The fingerprint of the key this handle was opened (or initialised) with.
    pub fn key_fingerprint(&self) -> &str {
        self.opened_fingerprint()
    }

    /// The repository's keys as stored now (re-read, so changes by other processes
    /// since opening show), the primary first.
    pub async fn keys(&self) -> Result<Vec<KeyInfo>> {
        let config = read_config(self.backend()).await?;
        Ok(self.key_infos(&config))
    }

    fn key_infos(&self, config: &Config) -> Vec<KeyInfo> {
        key_infos(
            config,
            Some((self.opened_fingerprint(), self.opened_sealed())),
        )
    }

    /// Adds `new_key` (the bytes of a key file) as a further key: from then on it opens
    /// the repository and every snapshot in it, written before or after. `label` is
    /// shown in listings and wrong-key errors; it is not secret, so keep secrets out of
    /// it. Fails with [`Error::Invalid`] when the key already is one of the
    /// repository's keys, and with [`Error::Locked`] while another key change runs.
    pub async fn add_key(&self, new_key: &[u8], label: &str) -> Result<KeyInfo> {
        check_label(label)?;
        if new_key.is_empty() {
            return Err(Error::invalid(
                "new key",
                "the key is empty; use a key file with content",
            ));
        }
        // argon2id before locking, so the lock is held for the config round trip only.
        let kek = derive_kek(self.config().kdf.clone(), new_key).await?;
        let fp = crypto::fingerprint(&kek);
        let lock = self.key_change_lock().await?;
        let result = async {
            let mut config = self.config_for_change("adding a key").await?;
            for slot in config.key_slots() {
                let opens = hex::decode(&slot.sealed)
                    .ok()
                    .map(|w| crypto::unwrap_master_key(&kek, &w))
                    .transpose()?
                    .flatten()
                    .is_some();
                if opens || slot.fingerprint.as_deref() == Some(fp.as_str()) {
                    return Err(Error::invalid(
                        "new key",
                        format!("it already is one of the repository's keys ({fp})"),
                    ));
                }
            }
            let slot = new_slot(&kek, self.master_key(), label, OffsetDateTime::now_utc())?;
            config.extra_keys.push(slot.clone());
            lock.ensure_live()?;
            write_config(self.backend(), &config).await?;
            // Read back before saying "added": the key must open what is stored now.
            let stored = read_config(self.backend()).await?;
            if !stored.key_slots().any(|s| *s == slot) {
                return Err(Error::Refused {
                    action: "adding a key",
                    reason: format!(
                        "the config read back from {} does not hold the new key {fp}; \
                         another process may have changed the keys at the same time; list \
                         them with `ferry repo key list` and add the key again",
                        self.backend().describe()
                    ),
                });
            }
            tracing::info!(repo = %self.backend().describe(), key = %fp, label, "key added");
            Ok(KeyInfo {
                fingerprint: Some(fp.clone()),
                label: label.to_string(),
                created: slot.created.unwrap_or(config.created),
                primary: false,
            })
        }
        .await;
        lock.release_quietly().await;
        result
    }

    /// Removes the key with this fingerprint (as [`Repository::keys`] lists it). Refuses
    /// ([`Error::Refused`]) to remove the repository's last key, and the key this
    /// handle was opened with unless `other_key` is given and opens one of the keys
    /// that remain, so the caller cannot lock itself out.
    ///
    /// Removing a key stops it from opening the repository. Someone who kept both the
    /// removed key and a copy of an older config can still unwrap the master key from
    /// that copy: the data is not re-encrypted.
    pub async fn remove_key(&self, fingerprint: &str, other_key: Option<&[u8]>) -> Result<KeyInfo> {
        let fp = crypto::parse_fingerprint(fingerprint).ok_or_else(|| {
            Error::invalid(
                "key fingerprint",
                format!(
                    "{fingerprint:?}: expected `k-` and 16 hex characters, as \
                     `ferry repo key list` shows"
                ),
            )
        })?;
        let other_kek = match other_key {
            Some(k) => Some(derive_kek(self.config().kdf.clone(), k).await?),
            None => None,
        };
        let lock = self.key_change_lock().await?;
        let result = async {
            let mut config = self.config_for_change("removing a key").await?;
            let infos = self.key_infos(&config);
            let Some(pos) = infos
                .iter()
                .position(|k| k.fingerprint.as_deref() == Some(fp.as_str()))
            else {
                return Err(Error::NotFound {
                    what: format!("key {fp} in repository {}", self.backend().describe()),
                    hint: format!("its keys are: {}", list(&infos)),
                });
            };
            if infos.len() == 1 {
                return Err(Error::Refused {
                    action: "removing a key",
                    reason: format!(
                        "{fp} is the repository's only key: without it nothing stored could \
                         be read again; add another key first (`ferry repo key add`)"
                    ),
                });
            }
            let remaining: Vec<&WrappedKey> = config
                .key_slots()
                .enumerate()
                .filter(|(i, _)| *i != pos)
                .map(|(_, s)| s)
                .collect();
            let remaining_infos: Vec<KeyInfo> = infos
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != pos)
                .map(|(_, k)| k.clone())
                .collect();
            if let Some(kek) = &other_kek {
                let opens = remaining.iter().any(|s| {
                    hex::decode(&s.sealed)
                        .ok()
                        .and_then(|w| crypto::unwrap_master_key(kek, &w).ok().flatten())
                        .is_some_and(|m| m == *self.master_key())
                });
                if !opens {
                    return Err(Error::Refused {
                        action: "removing a key",
                        reason: format!(
                            "the other key given (fingerprint {}) opens none of the keys \
                             that would remain: {}",
                            crypto::fingerprint(kek),
                            list(&remaining_infos)
                        ),
                    });
                }
            } else if fp == self.opened_fingerprint()
                || config
                    .key_slots()
                    .nth(pos)
                    .is_some_and(|s| s.sealed == self.opened_sealed())
            {
                // By sealed bytes too: labels and fingerprints in the config are not
                // authenticated, the slot this handle unwrapped is.
                return Err(Error::Refused {
                    action: "removing a key",
                    reason: format!(
                        "{fp} is the key in use; to remove it, also give another key that \
                         opens one of the remaining keys ({}), so that access is not lost \
                         (`ferry repo key remove --other-key-file`)",
                        list(&remaining_infos)
                    ),
                });
            }
            let removed = if pos == 0 {
                // Promote the next slot: readers from before key slots only know the
                // primary, and it must stay a valid key for them.
                let next = config.extra_keys.remove(0);
                std::mem::replace(&mut config.master_key, next)
            } else {
                config.extra_keys.remove(pos - 1)
            };
            lock.ensure_live()?;
            write_config(self.backend(), &config).await?;
            let stored = read_config(self.backend()).await?;
            if stored.key_slots().any(|s| s.sealed == removed.sealed) {
                return Err(Error::Refused {
                    action: "removing a key",
                    reason: format!(
                        "the config read back from {} still holds key {fp}; another process \
                         may have changed the keys at the same time; list them with \
                         `ferry repo key list` and remove it again",
                        self.backend().describe()
                    ),
                });
            }
            tracing::info!(repo = %self.backend().describe(), key = %fp, "key removed");
            Ok(infos[pos].clone())
        }
        .await;
        lock.release_quietly().await;
        result
    }

    /// A shared lock (backups go on) that no other key change holds.
    async fn key_change_lock(&self) -> Result<LockGuard> {
        let lock = LockGuard::acquire(
            self.backend().clone(),
            KEY_CHANGE_PURPOSE,
            LockKind::Shared,
            DEFAULT_LOCK_TTL,
            None,
        )
        .await?;
        // Both sides write their lock before listing, so of two concurrent key
        // changes at least one sees the other.
        let other = lock
            .others
            .iter()
            .find(|l| {
                !l.stale
                    && l.info
                        .as_ref()
                        .is_some_and(|i| i.purpose == KEY_CHANGE_PURPOSE)
            })
            .cloned();
        if let Some(l) = other {
            lock.release_quietly().await;
            return Err(Error::Locked {
                repo: self.backend().describe(),
                key: l.key,
                holder: l.info.map(Box::new),
            });
        }
        Ok(lock)
    }

    /// The config as stored now, checked to still be this repository's and to still
    /// hold the key this handle was opened with, with that key's fingerprint, label and
    /// time recorded when the config (made before key slots) lacks them.
    async fn config_for_change(&self, action: &'static str) -> Result<Config> {
        let mut config = read_config(self.backend()).await?;
        if config.id != self.config().id || config.kdf != self.config().kdf {
            return Err(Error::Refused {
                action,
                reason: format!(
                    "the config in {} is no longer the one this repository was opened with \
                     (another repository was made there); open it again",
                    self.backend().describe()
                ),
            });
        }
        let (own_fp, own_sealed) = (self.opened_fingerprint(), self.opened_sealed());
        let created = config.created;
        let mut own = None;
        for (i, slot) in std::iter::once(&mut config.master_key)
            .chain(config.extra_keys.iter_mut())
            .enumerate()
        {
            if slot.fingerprint.as_deref() == Some(own_fp)
                || (slot.fingerprint.is_none() && slot.sealed == own_sealed)
            {
                slot.fingerprint.get_or_insert_with(|| own_fp.to_string());
                if i == 0 {
                    slot.label.get_or_insert_with(|| INITIAL_LABEL.to_string());
                }
                slot.created.get_or_insert(created);
                own = Some(i);
            }
        }
        if own.is_none() {
            return Err(Error::Refused {
                action,
                reason: format!(
                    "the key this repository was opened with ({own_fp}) has been removed from \
                     it since; open the repository again with one of its keys: {}",
                    list(&self.key_infos(&config))
                ),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `config` types of the code before key slots, as they were.
    mod pre_slots {
        #[derive(serde::Deserialize)]
        pub struct WrappedKey {
            pub algorithm: String,
            pub sealed: String,
        }
        #[derive(serde::Deserialize)]
        pub struct Config {
            pub version: u32,
            pub kdf: crate::crypto::KdfParams,
            pub master_key: WrappedKey,
        }
    }

    fn two_key_config() -> (Config, [u8; 32], [u8; 32], [u8; 32]) {
        let kdf = crate::crypto::KdfParams::new(crate::crypto::KdfCost {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        })
        .unwrap();
        let master = [5u8; 32];
        let kek_a = kdf.derive_kek(b"key a").unwrap();
        let kek_b = kdf.derive_kek(b"key b").unwrap();
        let now = OffsetDateTime::now_utc();
        // A version 1 repository with key slots: what readers from before key slots
        // (which knew only version 1) meet.
        let config = Config {
            version: 1,
            id: crate::id::Id::random().unwrap(),
            created: now,
            chunker: crate::config::ChunkerParams::default(),
            pack_target_size: 16 << 20,
            compression_level: 1,
            kdf,
            master_key: new_slot(&kek_a, &master, INITIAL_LABEL, now).unwrap(),
            extra_keys: vec![new_slot(&kek_b, &master, "rotated", now).unwrap()],
        };
        (config, master, kek_a, kek_b)
    }

    #[test]
    fn readers_from_before_key_slots_open_with_the_primary_and_fail_otherwise() {
        let (config, master, kek_a, kek_b) = two_key_config();
        let json = serde_json::to_vec_pretty(&config).unwrap();
        let old: pre_slots::Config = serde_json::from_slice(&json).unwrap();
        assert_eq!(old.version, 1);
        assert_eq!(old.master_key.algorithm, "aes-256-gcm");
        assert_eq!(old.kdf, config.kdf);
        let wrapped = hex::decode(&old.master_key.sealed).unwrap();
        // What the old `open` did: the primary's key opens, any other is "wrong key".
        assert_eq!(
            crypto::unwrap_master_key(&kek_a, &wrapped).unwrap(),
            Some(master)
        );
        assert_eq!(crypto::unwrap_master_key(&kek_b, &wrapped).unwrap(), None);
    }

    #[test]
    fn slots_open_by_fingerprint_or_by_trying() {
        let (mut config, master, kek_a, kek_b) = two_key_config();
        let opened = open_slots(&config, &kek_b, "r").unwrap();
        assert_eq!(opened.master, master);
        assert_eq!(opened.fingerprint, crypto::fingerprint(&kek_b));
        assert_eq!(opened.sealed, config.extra_keys[0].sealed);
        // Without recorded fingerprints (older configs) every slot is tried.
        for s in std::iter::once(&mut config.master_key).chain(config.extra_keys.iter_mut()) {
            s.fingerprint = None;
        }
        assert_eq!(open_slots(&config, &kek_b, "r").unwrap().master, master);
        assert_eq!(open_slots(&config, &kek_a, "r").unwrap().master, master);
        // A slot that claims this key's fingerprint but does not verify is damage, not
        // a wrong key.
        let (mut config, _, kek_a, _) = two_key_config();
        let mut sealed = hex::decode(&config.master_key.sealed).unwrap();
        sealed[20] ^= 1;
        config.master_key.sealed = hex::encode(sealed);
        let err = open_slots(&config, &kek_a, "r").unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        // And Debug of what was opened shows no key.
        let (config, _, kek_a, _) = two_key_config();
        let opened = open_slots(&config, &kek_a, "r").unwrap();
        assert!(!format!("{opened:?}").contains("5, 5"), "{opened:?}");
    }

    #[test]
    fn labels_are_checked() {
        check_label("rotated 2026").unwrap();
        check_label("").unwrap();
        assert!(check_label("a\nb").is_err());
        assert!(check_label(&"x".repeat(MAX_LABEL_CHARS + 1)).is_err());
    }

    #[test]
    fn key_info_display_holds_no_secret_and_reads_well() {
        let k = KeyInfo {
            fingerprint: Some("k-0123456789abcdef".into()),
            label: "rotated".into(),
            created: time::Date::from_calendar_date(2026, time::Month::January, 2)
                .unwrap()
                .with_hms_milli(3, 4, 5, 678)
                .unwrap()
                .assume_utc(),
            primary: false,
        };
        assert_eq!(
            k.to_string(),
            "k-0123456789abcdef \"rotated\" added 2026-01-02T03:04:05Z"
        );
    }
}
