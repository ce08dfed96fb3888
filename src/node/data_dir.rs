//! The node's data directory: its identity (the ids of its virtual nodes),
//! the peers it last knew, its onion key for chat relays, and its RocksDB
//! database. Small files are replaced atomically, so a crash leaves the
//! old version or the new, never half of one.

use crate::error::{Error, Result};
use crate::id::Id;
use crate::ring::validate_addr;
use crate::room::onion::OnionKey;
use crate::store::{RocksEngine, Store};
use std::path::Path;
use std::time::Duration;

const IDENTITY_FILE: &str = "identity";
const PEERS_FILE: &str = "peers";
const ONION_KEY_FILE: &str = "onion.key";
const DATABASE_DIR: &str = "db";
/// Where a running node writes the address it advertises (for a node on
/// `--port 0`, the only place to learn it from).
pub const ADDRESS_FILE: &str = "address";
/// Where a node serving an admin port writes that port's address.
pub const ADMIN_ADDRESS_FILE: &str = "admin-address";

/// Opens the node's RocksDB database in its data directory.
pub fn open_store(data_dir: &Path) -> Result<Store<RocksEngine>> {
    let path = data_dir.join(DATABASE_DIR);
    let engine = RocksEngine::open(&path).map_err(|e| {
        let hint = if e.to_string().contains("lock") {
            "; is another chordal process using this --data-dir?"
        } else {
            ""
        };
        Error::Config(format!("cannot open {}: {e}{hint}", path.display()))
    })?;
    let started = std::time::Instant::now();
    let store = Store::new(engine)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let records = store.tree().root().count;
    if records > 0 {
        tracing::info!(
            "read {records} stored records into the digest tree in {}",
            humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64))
        );
    }
    Ok(store)
}

/// The ids of this node's virtual nodes: read from the data directory, or
/// derived from the advertised address and written there on first start.
pub fn load_or_create_identity(data_dir: &Path, advertise: &str, vnodes: u32) -> Result<Vec<Id>> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        Error::Config(format!(
            "cannot create data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (stored_addr, ids) = parse_identity(&text)
                .map_err(|e| Error::Config(format!("{} is damaged: {e}", path.display())))?;
            if ids.len() != vnodes as usize {
                return Err(Error::Config(format!(
                    "{} holds the identity of a node with {} virtual nodes, but {vnodes} were asked for; \
                     use --vnodes {} or a fresh --data-dir",
                    data_dir.display(),
                    ids.len(),
                    ids.len()
                )));
            }
            if stored_addr != advertise {
                tracing::warn!(
                    "data directory was created for {stored_addr}; now advertising {advertise} with the same ids"
                );
            }
            Ok(ids)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ids: Vec<Id> = (0..vnodes)
                .map(|index| Id::of_vnode(advertise, index))
                .collect();
            let mut text = String::from(
                "# chordal node identity: the ring ids of this node's virtual nodes\n",
            );
            text.push_str(&format!("advertise {advertise}\n"));
            for (index, id) in ids.iter().enumerate() {
                text.push_str(&format!("vnode {index} {id}\n"));
            }
            write_atomically(&path, &text)?;
            Ok(ids)
        }
        Err(e) => Err(Error::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn parse_identity(text: &str) -> std::result::Result<(String, Vec<Id>), String> {
    let mut advertise = None;
    let mut ids = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["advertise", addr] => advertise = Some(addr.to_string()),
            ["vnode", index, id] => {
                if index.parse::<usize>().ok() != Some(ids.len()) {
                    return Err(format!("vnode {index} out of order"));
                }
                ids.push(id.parse::<Id>().map_err(|e| format!("bad id {id}: {e}"))?);
            }
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    let advertise = advertise.ok_or("no advertise line")?;
    if ids.is_empty() {
        return Err("no vnode lines".into());
    }
    Ok((advertise, ids))
}

/// Writes the address the node advertises, replacing the last one.
pub fn write_address(data_dir: &Path, advertise: &str) -> Result<()> {
    write_atomically(&data_dir.join(ADDRESS_FILE), &format!("{advertise}\n"))
}

/// Writes the address the admin port listens on (with `--admin-port 0`,
/// the only place to learn it from).
pub fn write_admin_address(data_dir: &Path, addr: std::net::SocketAddr) -> Result<()> {
    write_atomically(&data_dir.join(ADMIN_ADDRESS_FILE), &format!("{addr}\n"))
}

/// Peers this node knew when it last ran.
pub fn load_peers(data_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(data_dir.join(PEERS_FILE))
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|line| validate_addr(line).is_ok())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn save_peers(data_dir: &Path, peers: &[String]) -> Result<()> {
    let mut text = peers.join("\n");
    text.push('\n');
    write_atomically(&data_dir.join(PEERS_FILE), &text)
}

/// The process's onion key for chat relays: read from the data directory,
/// or made and written there (readable by its owner only) on first start.
pub fn load_or_create_onion_key(data_dir: &Path) -> Result<OnionKey> {
    let path = data_dir.join(ONION_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let hex = text.trim();
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
            let secret: [u8; 32] = bytes
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Error::Config(format!("{} is not 64 hex digits", path.display())))?;
            Ok(OnionKey::from_secret(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = OnionKey::generate();
            let hex: String = key
                .secret_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let temporary = path.with_extension("tmp");
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&temporary)?;
                writeln!(file, "{hex}")?;
            }
            std::fs::rename(&temporary, &path)?;
            Ok(key)
        }
        Err(e) => Err(Error::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}
