//! A wrapper that injects failures, so failure paths are tested on purpose.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use super::{Backend, BackendError, DynBackend, ObjectInfo, Op};

/// What a matching rule does to a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultEffect {
    /// The call fails with [`BackendError::Injected`] (transient) without reaching the
    /// inner backend.
    Fail,
    /// Reads return only the first `keep` bytes, and listings only the first `keep`
    /// objects, silently (a store that lies); other calls fail as with `Fail`.
    Truncate { keep: usize },
}

/// Which calls fail. Build with [`FaultRule::on`] or [`FaultRule::any_op`] and narrow
/// with the builder methods; by default a rule fires on every matching call.
#[derive(Clone, Debug)]
pub struct FaultRule {
    op: Option<Op>,
    key_contains: Option<String>,
    skip: u64,
    times: Option<u64>,
    effect: FaultEffect,
}

impl FaultRule {
    /// Matches calls of one operation.
    pub fn on(op: Op) -> Self {
        FaultRule {
            op: Some(op),
            key_contains: None,
            skip: 0,
            times: None,
            effect: FaultEffect::Fail,
        }
    }

    /// Matches calls of every operation.
    pub fn any_op() -> Self {
        FaultRule {
            op: None,
            ..FaultRule::on(Op::Put)
        }
    }

    /// Only keys containing `s` (for list, the prefix).
    pub fn key_contains(mut self, s: impl Into<String>) -> Self {
        self.key_contains = Some(s.into());
        self
    }

    /// Only the `n`th matching call (1-based).
    pub fn nth(mut self, n: u64) -> Self {
        self.skip = n.saturating_sub(1);
        self.times = Some(1);
        self
    }

    /// The `n`th matching call and every later one.
    pub fn from_nth(mut self, n: u64) -> Self {
        self.skip = n.saturating_sub(1);
        self.times = None;
        self
    }

    /// Reads return a truncated object (listings a truncated list) instead of failing.
    pub fn truncate(mut self, keep: usize) -> Self {
        self.effect = FaultEffect::Truncate { keep };
        self
    }

    fn matches(&self, op: Op, key: &str) -> bool {
        self.op.is_none_or(|o| o == op)
            && self.key_contains.as_deref().is_none_or(|s| key.contains(s))
    }
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<(FaultRule, u64)>,
    calls: HashMap<Op, u64>,
    /// Added to every modification time the inner store reports: a store whose clock
    /// disagrees with this machine's.
    clock_offset: time::Duration,
}

/// Wraps another backend and applies [`FaultRule`]s to its calls.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: DynBackend,
    state: Mutex<State>,
}

impl FaultyBackend {
    /// Wraps `inner` with no rules.
    pub fn new(inner: DynBackend) -> Self {
        FaultyBackend {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// Convenience for `Arc::new(FaultyBackend::new(inner))`.
    pub fn wrap(inner: DynBackend) -> Arc<Self> {
        Arc::new(Self::new(inner))
    }

    /// Adds a rule; earlier rules win when several match.
    pub fn add_rule(&self, rule: FaultRule) {
        self.state.lock().rules.push((rule, 0));
    }

    /// Removes every rule (the store "recovers").
    pub fn clear_rules(&self) {
        self.state.lock().rules.clear();
    }

    /// Shifts the modification times listings report by `offset`, as if the store's
    /// clock ran that far ahead (negative: behind) of this machine's.
    pub fn set_clock_offset(&self, offset: time::Duration) {
        self.state.lock().clock_offset = offset;
    }

    /// How many calls of `op` were made, failed ones included.
    pub fn calls(&self, op: Op) -> u64 {
        self.state.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &DynBackend {
        &self.inner
    }

    fn fault(&self, op: Op, key: &str) -> Option<FaultEffect> {
        let mut st = self.state.lock();
        *st.calls.entry(op).or_default() += 1;
        for (rule, seen) in st.rules.iter_mut() {
            if !rule.matches(op, key) {
                continue;
            }
            *seen += 1;
            let fires = *seen > rule.skip
                && rule
                    .times
                    .is_none_or(|t| *seen <= rule.skip.saturating_add(t));
            if fires {
                return Some(rule.effect.clone());
            }
        }
        None
    }

    fn injected(op: Op, key: &str) -> BackendError {
        BackendError::Injected {
            op,
            key: key.to_string(),
        }
    }
}

#[async_trait]
impl Backend for FaultyBackend {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        match self.fault(Op::Put, key) {
            Some(_) => Err(Self::injected(Op::Put, key)),
            None => self.inner.put(key, data).await,
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        match self.fault(Op::Get, key) {
            Some(FaultEffect::Fail) => Err(Self::injected(Op::Get, key)),
            Some(FaultEffect::Truncate { keep }) => {
                let all = self.inner.get(key).await?;
                Ok(all.slice(..keep.min(all.len())))
            }
            None => self.inner.get(key).await,
        }
    }

    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, BackendError> {
        match self.fault(Op::GetRange, key) {
            Some(FaultEffect::Fail) => Err(Self::injected(Op::GetRange, key)),
            Some(FaultEffect::Truncate { keep }) => {
                let all = self.inner.get_range(key, offset, length).await?;
                Ok(all.slice(..keep.min(all.len())))
            }
            None => self.inner.get_range(key, offset, length).await,
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let mut listed = match self.fault(Op::List, prefix) {
            Some(FaultEffect::Fail) => return Err(Self::injected(Op::List, prefix)),
            Some(FaultEffect::Truncate { keep }) => {
                let mut all = self.inner.list(prefix).await?;
                all.truncate(keep);
                all
            }
            None => self.inner.list(prefix).await?,
        };
        let offset = self.state.lock().clock_offset;
        if !offset.is_zero() {
            for o in &mut listed {
                o.modified = o.modified.map(|t| t + offset);
            }
        }
        Ok(listed)
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        match self.fault(Op::Delete, key) {
            Some(_) => Err(Self::injected(Op::Delete, key)),
            None => self.inner.delete(key).await,
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, BackendError> {
        match self.fault(Op::Head, key) {
            Some(_) => Err(Self::injected(Op::Head, key)),
            None => self.inner.head(key).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MemoryBackend;
    use super::*;

    #[tokio::test]
    async fn passes_through_without_rules() {
        let b = FaultyBackend::new(Arc::new(MemoryBackend::new()));
        super::super::conformance::run(&b).await;
        assert!(b.calls(Op::Put) >= 4);
    }

    #[tokio::test]
    async fn nth_call_and_key_filter_and_truncation() {
        let b = FaultyBackend::new(Arc::new(MemoryBackend::new()));
        b.add_rule(FaultRule::on(Op::Put).key_contains("packs/").nth(2));
        b.put("packs/a", Bytes::from_static(b"a")).await.unwrap();
        b.put("index/x", Bytes::from_static(b"x")).await.unwrap();
        let err = b
            .put("packs/b", Bytes::from_static(b"b"))
            .await
            .unwrap_err();
        assert!(err.is_transient());
        assert!(err.to_string().contains("packs/b"), "{err}");
        b.put("packs/c", Bytes::from_static(b"c")).await.unwrap();
        assert!(!b.exists("packs/b").await.unwrap());

        b.add_rule(FaultRule::on(Op::Get).key_contains("index/").truncate(0));
        assert_eq!(b.get("index/x").await.unwrap().len(), 0);
        assert_eq!(b.get("packs/a").await.unwrap().len(), 1);

        b.add_rule(FaultRule::any_op().key_contains("packs/c").from_nth(1));
        assert!(b.head("packs/c").await.is_err());
        assert!(b.delete("packs/c").await.is_err());
        b.clear_rules();
        assert!(b.head("packs/c").await.unwrap().is_some());

        b.add_rule(FaultRule::on(Op::List).key_contains("packs/").truncate(1));
        assert_eq!(b.list("packs/").await.unwrap().len(), 1);
        assert_eq!(b.list("index/").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn clock_offset_shifts_listed_times() {
        let b = FaultyBackend::new(Arc::new(MemoryBackend::new()));
        b.put("locks/a", Bytes::from_static(b"{}")).await.unwrap();
        let before = b.list("locks/").await.unwrap()[0].modified.unwrap();
        b.set_clock_offset(time::Duration::hours(2));
        let after = b.list("locks/").await.unwrap()[0].modified.unwrap();
        assert_eq!(after - before, time::Duration::hours(2));
    }
}
