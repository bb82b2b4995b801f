//! A small bounded cache of recent query embeddings, least recently used out first.
//!
//! Queries repeat (the same search typed again, paging through results), and embedding one
//! costs tens of milliseconds of CPU. Eviction scans for the oldest entry, which only happens
//! on a miss that is about to pay for a model run anyway.

use std::collections::HashMap;
use std::sync::Arc;

pub(crate) struct QueryCache {
    capacity: usize,
    clock: u64,
    entries: HashMap<String, Entry>,
}

struct Entry {
    vector: Arc<[f32]>,
    last_used: u64,
}

impl QueryCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, clock: 0, entries: HashMap::with_capacity(capacity) }
    }

    pub(crate) fn get(&mut self, query: &str) -> Option<Arc<[f32]>> {
        self.clock += 1;
        let entry = self.entries.get_mut(query)?;
        entry.last_used = self.clock;
        Some(entry.vector.clone())
    }

    pub(crate) fn insert(&mut self, query: &str, vector: Arc<[f32]>) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(query) {
            let oldest = self.entries.iter().min_by_key(|(_, entry)| entry.last_used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.clock += 1;
        self.entries.insert(query.to_owned(), Entry { vector, last_used: self.clock });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(x: f32) -> Arc<[f32]> {
        Arc::from(vec![x])
    }

    #[test]
    fn keeps_at_most_capacity_and_evicts_the_least_recently_used() {
        let mut cache = QueryCache::new(2);
        cache.insert("a", vector(1.0));
        cache.insert("b", vector(2.0));
        assert_eq!(cache.get("a").as_deref(), Some(&[1.0][..]));
        cache.insert("c", vector(3.0));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("b").is_none(), "b was least recently used");
        assert!(cache.get("a").is_some());
        assert!(cache.get("c").is_some());
    }

    #[test]
    fn reinserting_a_key_replaces_it_without_evicting() {
        let mut cache = QueryCache::new(2);
        cache.insert("a", vector(1.0));
        cache.insert("b", vector(2.0));
        cache.insert("a", vector(9.0));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("a").as_deref(), Some(&[9.0][..]));
        assert!(cache.get("b").is_some());
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut cache = QueryCache::new(0);
        cache.insert("a", vector(1.0));
        assert!(cache.get("a").is_none());
    }
}
