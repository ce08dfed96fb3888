//! The client subcommands: put, get, delete, repair and bench.

use anyhow::{bail, Context};
use chordal::error::printable;
use chordal::loadgen::{self, Mix, RingTarget, Workload};
use chordal::rpc::ApiClient;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a client command sends its request.
#[derive(Args, Debug)]
pub struct Via {
    /// Node to send the request to; it routes it to the key's owner.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:10001")]
    via: String,
    /// How long to wait for the answer (the node itself retries an
    /// unreachable owner for 8 × its --rpc-timeout).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args, Debug)]
pub struct PutArgs {
    /// The key: 1 byte to 1 KiB.
    key: String,
    /// The value; omit it to give --file, or to pipe the value on stdin.
    #[arg(conflicts_with = "file")]
    value: Option<String>,
    /// Read the value from this file ("-" for stdin).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Forget the value after this long (e.g. 30s, 10m, 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Copies to wait for, the owner's included [default: the node's
    /// --write-quorum]; at most the ring's --replicas.
    #[arg(long = "w", value_name = "W")]
    write_quorum: Option<u32>,
    #[command(flatten)]
    via: Via,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// The key: 1 byte to 1 KiB.
    key: String,
    /// Read the copy held by the --via node itself, not the owner's.
    #[arg(long)]
    local: bool,
    /// Also print the owner, version and expiry on stderr.
    #[arg(long)]
    meta: bool,
    /// Replicas to hear from, the owner included [default: the node's
    /// --read-quorum]; the newest answer wins.
    #[arg(long = "r", value_name = "R", conflicts_with = "local")]
    read_quorum: Option<u32>,
    #[command(flatten)]
    via: Via,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The key: 1 byte to 1 KiB.
    key: String,
    /// Copies of the tombstone to wait for [default: --write-quorum].
    #[arg(long = "w", value_name = "W")]
    write_quorum: Option<u32>,
    #[command(flatten)]
    via: Via,
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    /// The node whose arcs to repair.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:10001")]
    via: String,
    /// How long to wait for the report (a replica that lacks everything
    /// takes as long as copying its arcs).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Node(s) to send requests to; repeat to spread the load.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:10001")]
    via: Vec<String>,
    /// Operations to run in all.
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Bytes per value written.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Relative weights of put, get and delete.
    #[arg(long, default_value = "put:50,get:50")]
    mix: Mix,
    /// Keys are drawn uniformly from this many (bench-0, bench-1, ...).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

async fn connect(via: &Via) -> anyhow::Result<ApiClient> {
    Ok(ApiClient::connect(&via.via, via.timeout).await?)
}

fn read_value(args: &PutArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(value) = &args.value {
        return Ok(value.clone().into_bytes());
    }
    let mut bytes = Vec::new();
    match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            return std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        }
        Some(_) => {}
        None if std::io::stdin().is_terminal() => {
            bail!("give the value as an argument, with --file PATH, or on stdin")
        }
        None => {}
    }
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("cannot read the value from stdin")?;
    Ok(bytes)
}

pub async fn put(args: PutArgs) -> anyhow::Result<()> {
    let value = read_value(&args)?;
    let size = value.len();
    let written = connect(&args.via)
        .await?
        .put_with_quorum(
            args.key.as_bytes(),
            value,
            args.ttl.unwrap_or(Duration::ZERO),
            quorum(args.write_quorum)?,
        )
        .await?;
    let expiry = match args.ttl {
        Some(ttl) => format!(", expires in {}", humantime::format_duration(ttl)),
        None => String::new(),
    };
    eprintln!(
        "stored {} ({size} bytes) at {}, {} {} acknowledged{expiry}",
        printable(args.key.as_bytes()),
        written.owner,
        written.acks,
        if written.acks == 1 { "copy" } else { "copies" }
    );
    Ok(())
}

/// A quorum from the command line: at least 1 (0 would mean "default").
fn quorum(asked: Option<u32>) -> anyhow::Result<u32> {
    match asked {
        Some(0) => bail!("a quorum must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(0),
    }
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let value = connect(&args.via)
        .await?
        .get_with_quorum(args.key.as_bytes(), args.local, quorum(args.read_quorum)?)
        .await?;
    if args.meta {
        let owner = value.owner.map_or_else(
            || format!("{} (local copy)", args.via.via),
            |o| o.to_string(),
        );
        eprintln!("owner    {owner}");
        eprintln!(
            "version  clock {:#x}, writer {:016x}",
            value.version.clock, value.version.writer
        );
        if let Some(at) = value.expires_at {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(at);
            eprintln!("expires  {}", humantime::format_rfc3339_seconds(at));
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&value.value)?;
    if stdout.is_terminal() && !value.value.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let written = connect(&args.via)
        .await?
        .delete_with_quorum(args.key.as_bytes(), quorum(args.write_quorum)?)
        .await?;
    let key = printable(args.key.as_bytes());
    if written.existed {
        eprintln!("deleted {key} at {}", written.owner);
    } else {
        eprintln!(
            "{key} had no value at {} (a tombstone was written anyway)",
            written.owner
        );
    }
    Ok(())
}

pub async fn repair(args: RepairArgs) -> anyhow::Result<()> {
    let mut conn = ApiClient::connect(&args.via, args.timeout).await?;
    eprintln!(
        "repair: comparing the arcs of {} with their replicas",
        args.via
    );
    let reports = conn.repair().await?;
    if reports.is_empty() {
        println!(
            "no arc to repair: {} owns no arc with a replica on another process",
            args.via
        );
        return Ok(());
    }
    println!(
        "{:<18} {:<22} {:>6} {:>8} {:>8} {:>8} {:>10} {:>9}",
        "owner", "replica", "trips", "nodes", "sent", "received", "bytes", "ms"
    );
    let mut failed = 0;
    let (mut pushed, mut pulled, mut bytes) = (0, 0, 0);
    for report in &reports {
        let stats = &report.stats;
        println!(
            "{:<18} {:<22} {:>6} {:>8} {:>8} {:>8} {:>10} {:>9.1}{}",
            report.owner.id.to_string(),
            report.replica.addr,
            stats.round_trips,
            stats.nodes_compared,
            stats.pushed,
            stats.pulled,
            stats.bytes_sent + stats.bytes_received,
            report.elapsed.as_secs_f64() * 1000.0,
            report
                .error
                .as_ref()
                .map(|e| format!("  FAILED: {e}"))
                .unwrap_or_default()
        );
        failed += usize::from(report.error.is_some());
        pushed += stats.pushed;
        pulled += stats.pulled;
        bytes += stats.bytes_sent + stats.bytes_received;
    }
    println!(
        "{} rounds: {} in sync, {failed} failed; {pushed} records sent to replicas, {pulled} received from them, {} on the wire",
        reports.len(),
        reports
            .iter()
            .filter(|r| r.error.is_none() && r.stats.in_sync())
            .count(),
        chordal::error::human_bytes(bytes)
    );
    if failed > 0 {
        bail!("{failed} of {} rounds failed", reports.len());
    }
    Ok(())
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.ops == 0 || args.keys == 0 {
        bail!("--ops, --concurrency and --keys must be at least 1");
    }
    let per_node = args.concurrency.div_ceil(16 * args.via.len()).clamp(1, 8);
    let target = RingTarget::connect(&args.via, per_node, args.timeout).await?;
    let workload = Workload {
        ops: args.ops,
        concurrency: args.concurrency,
        value_size: args.value_size,
        mix: args.mix,
        keys: args.keys,
    };
    eprintln!(
        "bench: {} ops ({}), {} in flight, {}-byte values, {} keys, via {}",
        workload.ops,
        workload.mix,
        workload.concurrency,
        workload.value_size,
        workload.keys,
        args.via.join(", ")
    );
    let bar = ProgressBar::new(args.ops);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} ops  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    let shown = bar.clone();
    let report = loadgen::run(Arc::new(target), &workload, move |done| {
        shown.set_position(done)
    })
    .await?;
    bar.finish_and_clear();
    print!("{report}");
    if report.completed() == 0 {
        bail!("no operation succeeded");
    }
    Ok(())
}
