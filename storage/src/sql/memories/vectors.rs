//! Exact cosine search for the embedded backend: each searched owner's live vectors held in
//! memory as one flat matrix, brought up to date from the owner's change sequence before
//! every search (only the rows changed since are read), and scanned in full. Owners not
//! searched lately are dropped once the cache passes its size budget.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// One owner's live vectors of one dimension.
pub(super) struct OwnerVectors {
    /// The owner's change sequence these vectors reflect; `None` before the first load.
    pub seq: Option<i64>,
    dims: usize,
    ids: Vec<String>,
    slots: HashMap<String, usize>,
    data: Vec<f32>,
}

impl OwnerVectors {
    fn new(dims: usize) -> Self {
        Self { seq: None, dims, ids: Vec::new(), slots: HashMap::new(), data: Vec::new() }
    }

    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Adds or replaces `id`'s vector; a vector of another length is not this matrix's and
    /// removes `id` instead.
    pub(super) fn upsert(&mut self, id: &str, vector: &[f32]) {
        if vector.len() != self.dims {
            self.remove(id);
            return;
        }
        match self.slots.get(id) {
            Some(&slot) => self.data[slot * self.dims..(slot + 1) * self.dims].copy_from_slice(vector),
            None => {
                self.slots.insert(id.to_string(), self.ids.len());
                self.ids.push(id.to_string());
                self.data.extend_from_slice(vector);
            }
        }
    }

    pub(super) fn remove(&mut self, id: &str) {
        let Some(slot) = self.slots.remove(id) else { return };
        let last = self.ids.len() - 1;
        if slot != last {
            let (head, tail) = self.data.split_at_mut(last * self.dims);
            head[slot * self.dims..(slot + 1) * self.dims].copy_from_slice(&tail[..self.dims]);
            self.ids.swap(slot, last);
            self.slots.insert(self.ids[slot].clone(), slot);
        }
        self.ids.pop();
        self.data.truncate(last * self.dims);
    }

    /// The `limit` ids most similar to `query` (vectors are unit length, so the dot product
    /// is the cosine), best first; `allowed` restricts the candidates.
    pub(super) fn top(
        &self,
        query: &[f32],
        allowed: Option<&HashSet<String>>,
        limit: usize,
    ) -> Vec<(String, f32)> {
        if query.len() != self.dims || limit == 0 {
            return Vec::new();
        }
        let mut scored: Vec<(usize, f32)> = self
            .data
            .chunks_exact(self.dims)
            .enumerate()
            .filter(|(slot, _)| allowed.is_none_or(|allowed| allowed.contains(&self.ids[*slot])))
            .map(|(slot, vector)| (slot, dot(query, vector)))
            .collect();
        let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1);
        if scored.len() > limit {
            scored.select_nth_unstable_by(limit - 1, by_score);
            scored.truncate(limit);
        }
        scored.sort_unstable_by(by_score);
        scored.into_iter().map(|(slot, score)| (self.ids[slot].clone(), score)).collect()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four accumulators let the compiler vectorise the loop.
    let mut sums = [0.0f32; 4];
    let (a_chunks, b_chunks) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..4 {
            sums[lane] += x[lane] * y[lane];
        }
    }
    sums.iter().sum::<f32>() + tail
}

struct Entry {
    vectors: Arc<RwLock<OwnerVectors>>,
    floats: AtomicUsize,
    last_used: AtomicU64,
}

/// Owners' vector matrices, bounded by a total number of floats.
pub(super) struct VectorCache {
    entries: Mutex<HashMap<(String, usize), Arc<Entry>>>,
    clock: AtomicU64,
    max_floats: usize,
}

impl VectorCache {
    pub(super) fn new(max_floats: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), clock: AtomicU64::new(0), max_floats }
    }

    /// The owner's matrix for `dims`, empty and unloaded the first time.
    pub(super) fn owner(&self, owner: &str, dims: usize) -> Arc<RwLock<OwnerVectors>> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.entry((owner.to_string(), dims)).or_insert_with(|| {
            Arc::new(Entry {
                vectors: Arc::new(RwLock::new(OwnerVectors::new(dims))),
                floats: AtomicUsize::new(0),
                last_used: AtomicU64::new(now),
            })
        });
        entry.last_used.store(now, Ordering::Relaxed);
        entry.vectors.clone()
    }

    /// Records the owner's matrix size after a refresh and drops the least recently used
    /// other owners while the cache is over budget.
    pub(super) fn account(&self, owner: &str, dims: usize, floats: usize) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (owner.to_string(), dims);
        if let Some(entry) = entries.get(&key) {
            entry.floats.store(floats, Ordering::Relaxed);
        }
        loop {
            let total: usize = entries.values().map(|e| e.floats.load(Ordering::Relaxed)).sum();
            if total <= self.max_floats {
                return;
            }
            let oldest = entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(oldest) => entries.remove(&oldest),
                None => return,
            };
        }
    }
}

/// Reads a lock, ignoring poisoning: a panic mid-update leaves `seq` unchanged or the
/// matrix consistent enough to be rebuilt by the next refresh.
pub(super) fn read(lock: &RwLock<OwnerVectors>) -> std::sync::RwLockReadGuard<'_, OwnerVectors> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn write(lock: &RwLock<OwnerVectors>) -> std::sync::RwLockWriteGuard<'_, OwnerVectors> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// A vector as SQLite stores it: little-endian f32s.
pub(super) fn to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(super) fn from_blob(blob: &[u8]) -> Vec<f32> {
    blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(x: f32, y: f32) -> Vec<f32> {
        let n = (x * x + y * y).sqrt();
        vec![x / n, y / n]
    }

    #[test]
    fn top_ranks_by_cosine_and_respects_allowed() {
        let mut vectors = OwnerVectors::new(2);
        vectors.upsert("east", &unit(1.0, 0.0));
        vectors.upsert("north", &unit(0.0, 1.0));
        vectors.upsert("northeast", &unit(1.0, 1.0));
        let hits = vectors.top(&unit(1.0, 0.1), None, 2);
        assert_eq!(hits.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(), ["east", "northeast"]);
        let allowed: HashSet<String> = ["north".to_string()].into();
        assert_eq!(vectors.top(&unit(1.0, 0.0), Some(&allowed), 5)[0].0, "north");
        assert!(vectors.top(&[1.0, 0.0, 0.0], None, 5).is_empty(), "another dimension matches nothing");
    }

    #[test]
    fn remove_and_replace_keep_the_matrix_consistent() {
        let mut vectors = OwnerVectors::new(2);
        for (id, v) in [("a", unit(1.0, 0.0)), ("b", unit(0.0, 1.0)), ("c", unit(-1.0, 0.0))] {
            vectors.upsert(id, &v);
        }
        vectors.remove("a");
        vectors.remove("missing");
        vectors.upsert("b", &unit(1.0, 0.0));
        assert_eq!(vectors.len(), 2);
        let hits = vectors.top(&unit(1.0, 0.0), None, 5);
        assert_eq!(hits[0].0, "b");
        assert!((hits[0].1 - 1.0).abs() < 1e-6);
        assert_eq!(hits[1].0, "c");
        vectors.upsert("c", &[1.0, 0.0, 0.0]);
        assert_eq!(vectors.len(), 1, "a vector of another length drops the id");
    }

    #[test]
    fn the_cache_drops_least_recently_used_owners_over_budget() {
        let cache = VectorCache::new(10);
        cache.owner("old", 2);
        cache.account("old", 2, 8);
        cache.owner("new", 2);
        cache.account("new", 2, 8);
        let entries = cache.entries.lock().unwrap();
        assert!(entries.contains_key(&("new".to_string(), 2)));
        assert!(!entries.contains_key(&("old".to_string(), 2)));
    }

    #[test]
    fn blobs_round_trip() {
        let v = vec![0.5f32, -1.25, 3.0];
        assert_eq!(from_blob(&to_blob(&v)), v);
    }
}
