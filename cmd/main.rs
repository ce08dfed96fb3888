//! The `chordal` command: parses arguments, sets up logging, and calls the
//! library. Everything that decides anything lives in the library.

mod chat;
mod client;

use anyhow::{bail, Context};
use chordal::node::NodeConfig;
use chordal::ops::launch::{Launch, Log, NodeProcess};
use chordal::ops::walk::{walk_ring, RingWalk};
use chordal::replica::ReplicationConfig;
use chordal::ring;
use chordal::rpc::ApiClient;
use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const ABOUT: &str = "A peer-to-peer key-value store on a Chord ring that stays correct.";

const LONG_ABOUT: &str = "\
A peer-to-peer key-value store on a Chord ring that stays correct.

With no subcommand, runs a ring node. Plain `chordal` listens on 127.0.0.1:10001
and, since that is also its bootstrap address, starts a new ring; any other node
joins it through 127.0.0.1:10001 unless given --bootstrap. Every key is kept on
--replicas distinct processes (3), writes wait for --write-quorum (2) copies and
reads gather --read-quorum (2) answers; replicas are compared and repaired with
Merkle trees in the background.

  chordal                                  bootstrap node, new ring
  chordal --port 10002 -vvv                join through 127.0.0.1:10001, trace logs
  chordal --port 10003 --vnodes 8          a node with 8 virtual nodes
  chordal local --nodes 5                  a whole local ring in one command
  chordal ring --via 127.0.0.1:10001       every member, in ring order
  chordal lookup KEY --via 127.0.0.1:10003 the owner of KEY and the hops taken
  chordal put KEY VALUE --ttl 10m          store a value (from any node)
  chordal put KEY --file photo.jpg         ... read from a file (or stdin)
  chordal get KEY --via 127.0.0.1:10003    the value, or \"not found\"
  chordal delete KEY
  chordal put KEY VALUE --w 3              wait for 3 copies (default: --write-quorum)
  chordal get KEY --r 1                    answer from the owner alone
  chordal repair --via 127.0.0.1:10001     anti-entropy now, with a report
  chordal bench --ops 100000 --concurrency 64 --mix put:50,get:50

Ctrl-C or SIGTERM makes a node leave the ring gracefully.";

#[derive(Parser, Debug)]
#[command(name = "chordal", version, about = ABOUT, long_about = LONG_ABOUT, args_conflicts_with_subcommands = true, args_override_self = true)]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,

    #[command(subcommand)]
    command: Option<Command>,

    /// More logging: -v info, -vv debug, -vvv trace. RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Args, Debug, Clone)]
struct NodeArgs {
    /// Interface to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,

    /// Port to listen on; 0 picks a free one. The address the node
    /// advertises is printed and written to DATA_DIR/address.
    #[arg(long, default_value_t = 10001)]
    port: u16,

    /// Address other nodes use to reach this one [default: HOST:PORT].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,

    /// Node to join through; repeat for fallbacks, tried in order. A node
    /// whose bootstrap is its own address starts a new ring.
    #[arg(
        long = "bootstrap",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:10001"
    )]
    bootstrap: Vec<String>,

    /// Start a new ring (or rejoin the peers this data directory last
    /// knew) instead of joining through --bootstrap: what naming this
    /// node's own address as --bootstrap does, for a node on --port 0.
    #[arg(long, conflicts_with = "bootstrap")]
    new_ring: bool,

    /// Virtual nodes (ring members) this process hosts.
    #[arg(long, default_value_t = 4)]
    vnodes: u32,

    /// Length r of every successor list; the ring survives any r-1
    /// consecutive members failing at once.
    #[arg(long, default_value_t = 4)]
    successors: usize,

    /// How often each member stabilizes (e.g. 500ms, 2s).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    stabilize_interval: Duration,

    /// How often each member refreshes one finger.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    fix_fingers_interval: Duration,

    /// Deadline of every request to another node, health checks included.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    rpc_timeout: Duration,

    /// Where the node keeps its identity, known peers and its RocksDB
    /// database [default: $XDG_DATA_HOME/chordal/HOST-PORT].
    #[arg(long, value_name = "PATH")]
    data_dir: Option<PathBuf>,

    /// Largest value accepted, in bytes; give every node the same limit.
    #[arg(long, default_value_t = chordal::data::DEFAULT_MAX_VALUE)]
    max_value_size: usize,

    /// Copies N of every key, on distinct processes (the owner and the
    /// next processes on the ring); give every node the same N.
    #[arg(long, default_value_t = 3)]
    replicas: usize,

    /// Acknowledgements W a write waits for, the owner's included; a write
    /// that gets fewer is answered "unavailable" with how many it got.
    #[arg(long, default_value_t = 2)]
    write_quorum: usize,

    /// Replicas R a read gathers, the owner included; the newest version
    /// wins and stale replicas are repaired. R + W > N makes every read
    /// see the last acknowledged write.
    #[arg(long, default_value_t = 2)]
    read_quorum: usize,

    /// How often each arc is compared with its replicas (Merkle
    /// anti-entropy); a round also runs soon after every membership change.
    /// 0 turns background rounds off: only `chordal repair` runs one.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    anti_entropy_interval: Duration,

    /// How long a delete's tombstone is kept before it is purged. Every
    /// replica must be reached by anti-entropy within it: a process away
    /// for longer should rejoin with its data directory wiped, or it may
    /// bring deleted values back. At least two anti-entropy intervals;
    /// 0 keeps tombstones for ever.
    #[arg(long, default_value = "1day", value_parser = humantime::parse_duration)]
    tombstone_grace: Duration,

    /// Serve the admin HTTP port here: Prometheus metrics at /metrics and
    /// the dashboard at /. Off unless given; 0 picks a free port, written
    /// to DATA_DIR/admin-address.
    #[arg(long, value_name = "PORT")]
    admin_port: Option<u16>,

    /// Interface of the admin port: loopback unless said otherwise.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    admin_host: std::net::IpAddr,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store VALUE under KEY at the key's owner (value from an argument,
    /// --file, or stdin).
    Put(client::PutArgs),
    /// Print the value under KEY; fails with "not found" when there is none.
    Get(client::GetArgs),
    /// Delete KEY (leaves a tombstone, so no older write can revive it).
    Delete(client::DeleteArgs),
    /// Run an anti-entropy round of a node's arcs now, with every replica,
    /// and report what differed and what moved.
    Repair(client::RepairArgs),
    /// Chat in a room over the ring: messages are sealed end to end and
    /// kept in the ring for --retention; nodes see neither the room's name
    /// nor what is said.
    Chat(chat::ChatArgs),
    /// Measure throughput and latency (p50, p99, p99.9) of a put/get/delete
    /// workload against a ring.
    Bench(client::BenchArgs),
    /// Find the owner of KEY: prints the owner's address, then the hops taken.
    Lookup {
        key: String,
        /// Node to ask.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:10001")]
        via: String,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Walk the ring from a node and print every member in ring order: id,
    /// address, predecessor, successor list and the fingers in use.
    Ring {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:10001")]
        via: String,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print only the summary line.
        #[arg(long)]
        summary: bool,
    },
    /// Ask a node's gRPC health service whether it is in a ring: exit 0
    /// if SERVING, 1 if not (for container health checks and scripts).
    Health {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:10001")]
        addr: String,
        /// The health service to ask: "chordal" (the process, SERVING while
        /// any of its members is in the ring), "" (the server is up), or
        /// "chordal.member.<id>" (one member).
        #[arg(long, default_value = "chordal")]
        service: String,
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Run a whole local ring as child processes; Ctrl-C stops them all.
    Local {
        /// Number of node processes.
        #[arg(long, default_value_t = 5)]
        nodes: u16,
        /// Port of the first node; the others take the ports after it.
        /// 0: every node picks a free port (printed below).
        #[arg(long, default_value_t = 10001)]
        base_port: u16,
        /// Virtual nodes per process.
        #[arg(long, default_value_t = 4)]
        vnodes: u32,
        /// Directory holding one data directory per node
        /// [default: $XDG_DATA_HOME/chordal/local].
        #[arg(long, value_name = "PATH")]
        data_dir: Option<PathBuf>,
        /// Start from empty data directories.
        #[arg(long)]
        fresh: bool,
        /// Print the ring's summary this often (0 to stay quiet).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        watch: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chordal: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None => run_node(cli.node).await,
            Some(Command::Put(args)) => client::put(args).await,
            Some(Command::Get(args)) => client::get(args).await,
            Some(Command::Delete(args)) => client::delete(args).await,
            Some(Command::Repair(args)) => client::repair(args).await,
            Some(Command::Bench(args)) => client::bench(args).await,
            Some(Command::Chat(args)) => chat::chat(args).await,
            Some(Command::Health {
                addr,
                service,
                timeout,
            }) => match chordal::rpc::check_health(&addr, &service, timeout).await? {
                true => Ok(()),
                false => anyhow::bail!("{addr}: {service:?} is not serving"),
            },
            Some(Command::Lookup { key, via, timeout }) => lookup(&key, &via, timeout).await,
            Some(Command::Ring {
                via,
                timeout,
                summary,
            }) => ring(&via, timeout, summary).await,
            Some(Command::Local {
                nodes,
                base_port,
                vnodes,
                data_dir,
                fresh,
                watch,
            }) => {
                local_ring(
                    nodes,
                    base_port,
                    vnodes,
                    data_dir,
                    fresh,
                    watch,
                    cli.verbose,
                )
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chordal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "warn,chordal=info",
        2 => "info,chordal=debug",
        _ => "info,chordal=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only for a terminal: a log piped to a file stays plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn data_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("chordal");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/chordal"),
        None => PathBuf::from("chordal-data"),
    }
}

async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let listen = format!("{}:{}", args.host, args.port);
    if args.advertise.is_none() && (args.host == "0.0.0.0" || args.host == "::") {
        bail!("listening on all interfaces ({listen}): pass --advertise with the address others should use");
    }
    if args.port == 0 && args.advertise.is_some() {
        bail!("--port 0 picks a port when the node starts, so --advertise cannot name it");
    }
    // Bound first: with --port 0 the port is known only now.
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let port = listener.local_addr()?.port();
    let advertise = args
        .advertise
        .unwrap_or_else(|| format!("{}:{port}", args.host));
    let bootstrap = if args.new_ring {
        vec![advertise.clone()]
    } else {
        args.bootstrap
    };
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| data_home().join(advertise.replace(':', "-")));
    let config = NodeConfig {
        advertise: advertise.clone(),
        bootstrap,
        vnodes: args.vnodes,
        ring: ring::Config {
            successors: args.successors,
            ..ring::Config::default()
        },
        stabilize_interval: args.stabilize_interval,
        fix_fingers_interval: args.fix_fingers_interval,
        rpc_timeout: args.rpc_timeout,
        data_dir: data_dir.clone(),
        max_value: args.max_value_size,
        replication: ReplicationConfig {
            replicas: args.replicas,
            write_quorum: args.write_quorum,
            read_quorum: args.read_quorum,
            anti_entropy_interval: args.anti_entropy_interval,
            tombstone_grace: args.tombstone_grace,
        },
    };
    let admin = args
        .admin_port
        .map(|port| std::net::SocketAddr::new(args.admin_host, port));
    config.validate()?;
    let action = if config.bootstrap.contains(&advertise) {
        "starting a new ring (or rejoining the peers it last knew)".to_string()
    } else {
        format!("joining through {}", config.bootstrap.join(", "))
    };
    say(format!(
        "chordal: node {advertise} with {} virtual nodes, {action}; data in {}",
        config.vnodes,
        data_dir.display()
    ));
    chordal::ops::run(config, admin, listener, shutdown).await?;
    say(format!("chordal: node {advertise} left the ring"));
    Ok(())
}

/// Writes `line` to stderr in one piece: the nodes of `chordal local` share
/// one terminal, and `eprintln!` writes a line in several calls that other
/// processes' lines can cut into.
fn say(line: String) {
    use std::io::Write;
    let line = line + "\n";
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Completes on Ctrl-C or SIGTERM. Both are caught from the moment this is
/// called, not first awaited: one that arrives while a node is still
/// starting stops it gracefully instead of killing it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            _ = received(interrupt.as_mut()) => {}
            _ = received(terminate.as_mut()) => {}
        }
    }
}

/// The next delivery of `signal`; never, if it could not be caught.
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

async fn lookup(key: &str, via: &str, timeout: Duration) -> anyhow::Result<()> {
    let mut conn = ApiClient::connect(via, timeout).await?;
    let answer = conn.lookup(key.as_bytes()).await?;
    println!("{}", answer.owner.addr);
    println!("key      {key:?} (id {})", answer.key_id);
    println!("owner    {}", answer.owner);
    println!("start    {via}");
    for (index, hop) in answer.path.iter().enumerate() {
        println!("hop {:<4} {hop}", index + 1);
    }
    println!("hops     {}", answer.path.len());
    Ok(())
}

async fn ring(via: &str, timeout: Duration, summary_only: bool) -> anyhow::Result<()> {
    let walk = walk_ring(via, timeout, 100_000).await?;
    if !summary_only {
        print_ring(&walk);
    }
    println!("{}", summary(&walk));
    if !walk.closed || !walk.ordered {
        bail!("the ring is not whole: {}", walk.problems.join("; "));
    }
    Ok(())
}

fn print_ring(walk: &RingWalk) {
    let short = |node: &chordal::ring::NodeRef| format!("{}@{}", node.id, node.addr);
    for member in &walk.members {
        println!("{}  {}", member.me.id, member.me.addr);
        let predecessor = member
            .predecessor
            .as_ref()
            .map(short)
            .unwrap_or_else(|| "none".into());
        println!("    predecessor  {predecessor}");
        let successors: Vec<String> = member.successors.iter().map(short).collect();
        println!("    successors   {}", successors.join(" "));
        let fingers: Vec<String> = member.fingers.iter().map(short).collect();
        println!(
            "    fingers      {} in use: {}",
            fingers.len(),
            fingers.join(" ")
        );
        println!("    records      {} in its arc", member.owned_records);
        let replicas: Vec<String> = member.replicas.iter().map(replica_health).collect();
        let replicas = if replicas.is_empty() {
            "none (no other process in the ring)".to_string()
        } else {
            replicas.join(", ")
        };
        println!("    replicas     {replicas}");
    }
    for process in &walk.process_info {
        let owned: u64 = process.members.iter().map(|m| m.owned_records).sum();
        println!(
            "process {}: {} records: {owned} in its members' arcs, {} replicas of others'; {} hints held",
            process.addr,
            process.records,
            process.records.saturating_sub(owned),
            process.hints
        );
    }
}

/// `addr (in sync 12s ago)`, as `chordal ring` shows a replica.
fn replica_health(health: &chordal::data::ReplicaHealth) -> String {
    let state = match (&health.last_round_ago, &health.error) {
        (None, _) => "no round yet".to_string(),
        (Some(ago), Some(error)) => format!("round failed {} ago: {error}", seconds(*ago)),
        (Some(ago), None) if health.in_sync => format!("in sync {} ago", seconds(*ago)),
        (Some(ago), None) => format!(
            "repaired {} ago: {} sent, {} received",
            seconds(*ago),
            health.pushed,
            health.pulled
        ),
    };
    format!("{} ({state})", health.replica.addr)
}

fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

fn summary(walk: &RingWalk) -> String {
    let state = match (walk.closed, walk.ordered) {
        (true, true) => "closed and ordered".to_string(),
        _ => format!("NOT WHOLE ({})", walk.problems.join("; ")),
    };
    let replication = match walk.process_info.first() {
        Some(process) => {
            let copies = (process.replicas as usize).min(walk.processes);
            let short: Vec<String> = walk
                .members
                .iter()
                .filter(|m| m.replicas.len() + 1 < copies)
                .map(|m| m.me.to_string())
                .collect();
            let health = if short.is_empty() {
                format!("every arc on {copies} processes")
            } else {
                format!("{} arcs on fewer than {copies} processes", short.len())
            };
            format!(
                "; N={} W={} R={}, {health}",
                process.replicas, process.write_quorum, process.read_quorum
            )
        }
        None => String::new(),
    };
    format!(
        "ring: {} members on {} processes, {state}{replication}",
        walk.members.len(),
        walk.processes
    )
}

async fn local_ring(
    nodes: u16,
    base_port: u16,
    vnodes: u32,
    data_dir: Option<PathBuf>,
    fresh: bool,
    watch: Duration,
    verbose: u8,
) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if base_port.checked_add(nodes - 1).is_none() {
        bail!("ports {base_port}.. do not fit {nodes} nodes");
    }
    let root = data_dir.unwrap_or_else(|| data_home().join("local"));
    if fresh && root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("cannot empty {}", root.display()))?;
    }
    let exe = std::env::current_exe().context("cannot find the chordal executable")?;
    let mut children: Vec<NodeProcess> = Vec::new();
    for index in 0..nodes {
        // With --base-port 0 every node picks a free port and reports it.
        let port = if base_port == 0 { 0 } else { base_port + index };
        let data_dir = if base_port == 0 {
            root.join(format!("node-{index}"))
        } else {
            root.join(format!("127.0.0.1-{port}"))
        };
        let mut launch = match children.first() {
            Some(first) => Launch::new(&exe, port, &first.addr, &data_dir),
            None if base_port == 0 => Launch::new_ring(&exe, &data_dir),
            None => Launch::new(&exe, port, &format!("127.0.0.1:{port}"), &data_dir),
        }
        .vnodes(vnodes);
        if verbose > 0 {
            launch = launch.args(&[format!("-{}", "v".repeat(verbose as usize))]);
        }
        // The nodes log to this terminal, as a node started by hand does.
        let mut child = launch
            .log_to(Log::Inherit)
            .spawn()
            .with_context(|| format!("cannot start node {index}"))?;
        child
            .wait_for_address(Duration::from_secs(60))
            .with_context(|| format!("node {index} did not start"))?;
        children.push(child);
        if index == 0 {
            // Let the bootstrap node start its ring before the others knock.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let bootstrap = children[0].addr.clone();
    println!(
        "local ring of {nodes} nodes ({vnodes} virtual nodes each), data in {}:",
        root.display()
    );
    for child in &children {
        println!(
            "  {}  (pid {})",
            child.addr,
            child.pid().unwrap_or_default()
        );
    }
    println!("try: chordal ring --via {bootstrap}");
    println!(
        "     chordal lookup hello --via {}",
        children[children.len() - 1].addr
    );
    println!("     chordal put hello world && chordal get hello");
    println!("Ctrl-C stops every node.");

    let mut ticker = tokio::time::interval(if watch.is_zero() {
        Duration::from_secs(3600)
    } else {
        watch
    });
    ticker.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick(), if !watch.is_zero() => {
                match walk_ring(&bootstrap, Duration::from_secs(2), 100_000).await {
                    Ok(walk) => println!("{}", summary(&walk)),
                    Err(e) => println!("ring: cannot walk from {bootstrap}: {e}"),
                }
            }
        }
        for child in &mut children {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("chordal: node {} exited ({status})", child.addr);
            }
        }
        children.retain(|child| child.is_running());
    }
    println!("stopping {} nodes", children.len());
    for child in &children {
        child.signal_term().ok();
    }
    // Each node leaves the ring and exits; waited for off the runtime.
    let stopped = tokio::task::spawn_blocking(move || {
        for mut child in children {
            let addr = child.addr.clone();
            match child.wait_for_exit(Duration::from_secs(10)) {
                Ok(status) if status.success() => {}
                Ok(status) => eprintln!("chordal: node {addr} exited with {status}"),
                Err(error) => eprintln!("chordal: {error}"),
            }
        }
    });
    stopped.await.ok();
    Ok(())
}
