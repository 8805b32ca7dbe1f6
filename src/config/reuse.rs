//! What a reload carries over from the running config.
//!
//! A reload compiles the new file into a fresh [`Snapshot`](super::Snapshot),
//! but the parts whose settings did not change are taken from the running
//! one instead of being rebuilt: a service keeps its endpoints' connection
//! pools, health and outlier state (and its probe and discovery tasks), a
//! rate-limit rule keeps its counters, a Redis backend its connection. Each
//! part is recorded under a key (`service:NAME`, `rule:NAME`, `redis`) with
//! a fingerprint of everything it was built from; the next build reuses the
//! recorded part when the key and the fingerprint are the same.

use std::any::Any;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The reusable parts of one compiled config, by key.
#[derive(Default, Clone)]
pub struct Components {
    parts: HashMap<String, Kept>,
}

#[derive(Clone)]
struct Kept {
    fingerprint: u64,
    part: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.parts.keys().collect();
        keys.sort();
        f.debug_struct("Components").field("keys", &keys).finish()
    }
}

impl Components {
    /// The part recorded under `key`, if it was built from the same settings.
    pub(crate) fn get<T: Any + Send + Sync>(&self, key: &str, fingerprint: u64) -> Option<Arc<T>> {
        let kept = self.parts.get(key)?;
        if kept.fingerprint != fingerprint {
            return None;
        }
        Arc::clone(&kept.part).downcast::<T>().ok()
    }

    /// The part recorded under `key`, whatever its settings were.
    pub(crate) fn get_any<T: Any + Send + Sync>(&self, key: &str) -> Option<Arc<T>> {
        Arc::clone(&self.parts.get(key)?.part).downcast::<T>().ok()
    }

    /// Record `part`, built from settings with this fingerprint.
    pub(crate) fn insert<T: Any + Send + Sync>(
        &mut self,
        key: String,
        fingerprint: u64,
        part: Arc<T>,
    ) {
        self.parts.insert(key, Kept { fingerprint, part });
    }

    /// Number of recorded parts.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// A fingerprint of settings: equal inputs give equal fingerprints within
/// one process (which is all a reload needs).
pub(crate) fn fingerprint<T: Hash + ?Sized>(settings: &T) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    settings.hash(&mut h);
    h.finish()
}

/// The TOML text of one part of the file as parsed (keys sorted, no spans
/// or comments), so that moving a section or editing another one leaves
/// its fingerprint unchanged.
pub(crate) fn value_text(value: Option<&toml::Value>) -> String {
    value.map(ToString::to_string).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_is_reused_only_with_the_same_key_fingerprint_and_type() {
        let mut c = Components::default();
        c.insert("service:a".into(), 7, Arc::new(5u32));
        assert_eq!(c.get::<u32>("service:a", 7).as_deref(), Some(&5));
        assert!(c.get::<u32>("service:a", 8).is_none());
        assert!(c.get::<u32>("service:b", 7).is_none());
        assert!(c.get::<u64>("service:a", 7).is_none());
    }

    #[test]
    fn value_text_ignores_layout_and_comments() {
        let a: toml::Table = toml::from_str("x = 1\n# note\ny = \"v\"\n").unwrap();
        let b: toml::Table = toml::from_str("y   = \"v\"\nx = 1").unwrap();
        let (a, b) = (toml::Value::Table(a), toml::Value::Table(b));
        assert_eq!(value_text(Some(&a)), value_text(Some(&b)));
        assert_eq!(
            fingerprint(&value_text(Some(&a))),
            fingerprint(&value_text(Some(&b)))
        );
    }
}
