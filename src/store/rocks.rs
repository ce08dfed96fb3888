//! The RocksDB engine: what a node really stores, on disk.

use super::{Engine, StoreError, StoreResult};
use rocksdb::{Direction, IteratorMode, Options, DB};
use std::path::Path;

pub struct RocksEngine {
    db: DB,
}

fn engine_error(error: rocksdb::Error) -> StoreError {
    StoreError::Engine(error.into_string())
}

impl RocksEngine {
    /// Opens (creating if needed) the database in `path`. RocksDB's lock
    /// file refuses a second process on the same directory.
    pub fn open(path: &Path) -> StoreResult<RocksEngine> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let db = DB::open(&options, path).map_err(engine_error)?;
        Ok(RocksEngine { db })
    }
}

impl Engine for RocksEngine {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.db.get(key).map_err(engine_error)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.db.put(key, value).map_err(engine_error)
    }

    fn delete(&self, key: &[u8]) -> StoreResult<()> {
        self.db.delete(key).map_err(engine_error)
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(start, Direction::Forward))
        {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(engine_error)?;
            if end.is_some_and(|end| &*key >= end) {
                break;
            }
            out.push((key.into_vec(), value.into_vec()));
        }
        Ok(out)
    }
}
