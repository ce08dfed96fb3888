//! The RocksDB engine: what a node really stores, on disk.
//!
//! One database per node, with two column families: `default` for the
//! records of the ring ([`RocksEngine::open`]) and `hints` for writes held
//! for a replica that could not be reached ([`RocksEngine::hints`]). Both
//! engines share the database, so one lock file and one write-ahead log
//! cover them.

use super::{Engine, StoreError, StoreResult};
use rocksdb::{ColumnFamily, Direction, IteratorMode, Options, DB};
use std::path::Path;
use std::sync::Arc;

const HINTS: &str = "hints";

pub struct RocksEngine {
    db: Arc<DB>,
    /// `None`: the default column family.
    column: Option<&'static str>,
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
        options.create_missing_column_families(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let db = DB::open_cf(&options, path, [HINTS]).map_err(engine_error)?;
        Ok(RocksEngine {
            db: Arc::new(db),
            column: None,
        })
    }

    /// The engine of the same database's hint column family.
    pub fn hints(&self) -> RocksEngine {
        RocksEngine {
            db: self.db.clone(),
            column: Some(HINTS),
        }
    }

    fn column(&self) -> Option<&ColumnFamily> {
        self.column.map(|name| {
            self.db
                .cf_handle(name)
                .expect("column families are created on open")
        })
    }
}

impl Engine for RocksEngine {
    /// Bytes of the database's table files and memtables, as RocksDB
    /// counts them.
    fn stored_bytes(&self) -> u64 {
        [
            "rocksdb.total-sst-files-size",
            "rocksdb.cur-size-all-mem-tables",
        ]
        .iter()
        .filter_map(|name| self.db.property_int_value(*name).ok().flatten())
        .sum()
    }

    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        match self.column() {
            Some(column) => self.db.get_cf(column, key),
            None => self.db.get(key),
        }
        .map_err(engine_error)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        match self.column() {
            Some(column) => self.db.put_cf(column, key, value),
            None => self.db.put(key, value),
        }
        .map_err(engine_error)
    }

    fn delete(&self, key: &[u8]) -> StoreResult<()> {
        match self.column() {
            Some(column) => self.db.delete_cf(column, key),
            None => self.db.delete(key),
        }
        .map_err(engine_error)
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mode = IteratorMode::From(start, Direction::Forward);
        let iterator = match self.column() {
            Some(column) => self.db.iterator_cf(column, mode),
            None => self.db.iterator(mode),
        };
        let mut out = Vec::new();
        for item in iterator {
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
