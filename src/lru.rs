//! A least-recently-used map bounded by the bytes of its values: O(1) lookups and
//! insertions (over the `lru` crate's list), evicting oldest first.

use std::hash::Hash;

/// Values say what they weigh.
pub(crate) trait Weighed {
    /// Bytes held.
    fn weight(&self) -> u64;
}

/// An LRU map holding at most `budget` bytes (but always its newest entry).
pub(crate) struct BoundedLru<K: Hash + Eq, V: Weighed> {
    map: lru::LruCache<K, V>,
    budget: u64,
    bytes: u64,
    evictions: u64,
}

impl<K: Hash + Eq + Clone, V: Weighed> BoundedLru<K, V> {
    pub(crate) fn new(budget: u64) -> Self {
        BoundedLru {
            map: lru::LruCache::unbounded(),
            budget,
            bytes: 0,
            evictions: 0,
        }
    }

    /// The value of `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Inserts (or replaces) `key`, then evicts the least recently used entries until the
    /// map fits its budget.
    pub(crate) fn put(&mut self, key: K, value: V) {
        self.bytes += value.weight();
        if let Some(old) = self.map.put(key, value) {
            self.bytes -= old.weight();
        }
        while self.bytes > self.budget && self.map.len() > 1 {
            match self.map.pop_lru() {
                Some((_, v)) => {
                    self.bytes -= v.weight();
                    self.evictions += 1;
                }
                None => break,
            }
        }
    }

    /// Removes the entries whose key matches `drop`.
    pub(crate) fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        let gone: Vec<K> = self
            .map
            .iter()
            .filter(|(k, _)| !keep(k))
            .map(|(k, _)| k)
            .cloned()
            .collect::<Vec<_>>();
        for k in gone {
            if let Some(v) = self.map.pop(&k) {
                self.bytes -= v.weight();
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }
}

impl<K: Hash + Eq, V: Weighed> std::fmt::Debug for BoundedLru<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedLru")
            .field("entries", &self.map.len())
            .field("bytes", &self.bytes)
            .field("budget", &self.budget)
            .finish()
    }
}

impl<T: Weighed + ?Sized> Weighed for std::sync::Arc<T> {
    fn weight(&self) -> u64 {
        (**self).weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weighed for u64 {
        fn weight(&self) -> u64 {
            *self
        }
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_newest_always_stays() {
        let mut l: BoundedLru<&str, u64> = BoundedLru::new(10);
        l.put("a", 4);
        l.put("b", 4);
        assert!(l.get(&"a").is_some()); // a is now newer than b
        l.put("c", 4);
        assert!(l.get(&"b").is_none() && l.get(&"a").is_some() && l.get(&"c").is_some());
        assert_eq!((l.bytes(), l.evictions()), (8, 1));
        l.put("huge", 100);
        assert_eq!(l.len(), 1);
        assert!(l.get(&"huge").is_some());
        l.retain(|k| *k != "huge");
        assert_eq!((l.len(), l.bytes()), (0, 0));
    }
}
