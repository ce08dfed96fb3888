//! The in-memory engine, for the simulator and for tests that compare it
//! with RocksDB.

use super::{Engine, StoreResult};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct MemoryEngine {
    entries: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryEngine {
    pub fn new() -> MemoryEngine {
        MemoryEngine::default()
    }
}

impl Engine for MemoryEngine {
    fn blocks(&self) -> bool {
        false
    }

    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.entries.lock().expect("engine lock").get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.entries
            .lock()
            .expect("engine lock")
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> StoreResult<()> {
        self.entries.lock().expect("engine lock").remove(key);
        Ok(())
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let entries = self.entries.lock().expect("engine lock");
        let upper = match end {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let range = entries.range::<[u8], _>((Bound::Included(start), upper));
        Ok(range
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
