//! The workload behind `chordal bench`: a fixed number of operations in a
//! given mix, run by many concurrent workers against a ring through its
//! client API, each latency recorded in an HDR histogram.
//!
//! The same runner drives any [`Target`], so the benchmarks can put the
//! ring beside RocksDB called directly in-process with the same workload.
//! Sits at the top of the library beside `chat`: it reaches a ring only
//! through the `rpc` client.

use crate::error::{Error, Result};
use crate::rpc::ApiClient;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The kinds of operation a workload mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Put,
    Get,
    Delete,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Put, Kind::Get, Kind::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Put => "put",
            Kind::Get => "get",
            Kind::Delete => "delete",
        }
    }
}

/// Relative weights of each kind, e.g. `put:50,get:50`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 3],
}

impl Mix {
    fn pick(&self, rng: &mut impl Rng) -> Kind {
        let total: u32 = self.weights.iter().sum();
        let mut roll = rng.random_range(0..total);
        for (kind, weight) in Kind::ALL.iter().zip(self.weights) {
            if roll < weight {
                return *kind;
            }
            roll -= weight;
        }
        unreachable!("roll below the total weight")
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        let mut weights = [0u32; 3];
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once(':')
                .ok_or_else(|| format!("{part:?} is not KIND:WEIGHT"))?;
            let index = Kind::ALL
                .iter()
                .position(|k| k.name() == name.trim())
                .ok_or_else(|| format!("unknown operation {name:?}; use put, get or delete"))?;
            weights[index] = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight {weight:?} is not a whole number"))?;
        }
        if weights.iter().sum::<u32>() == 0 {
            return Err("the mix has no operation with a weight above zero".into());
        }
        Ok(Mix { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Kind::ALL
            .iter()
            .zip(self.weights)
            .filter(|(_, w)| *w > 0)
            .map(|(k, w)| format!("{}:{w}", k.name()))
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// What the workload runs against.
#[tonic::async_trait]
pub trait Target: Send + Sync + 'static {
    /// One operation; `Ok(false)` for a get or delete that found nothing.
    async fn run(&self, worker: usize, kind: Kind, key: &[u8], value: &[u8]) -> Result<bool>;
}

/// A ring reached through one or more nodes' client API; worker `i` uses
/// connection `i mod n`.
pub struct RingTarget {
    conns: Vec<ApiClient>,
}

impl RingTarget {
    /// Opens `per_node` connections to each node in `via`.
    pub async fn connect(via: &[String], per_node: usize, timeout: Duration) -> Result<RingTarget> {
        let mut conns = Vec::new();
        for _ in 0..per_node.max(1) {
            for addr in via {
                conns.push(ApiClient::connect(addr, timeout).await?);
            }
        }
        Ok(RingTarget { conns })
    }
}

#[tonic::async_trait]
impl Target for RingTarget {
    async fn run(&self, worker: usize, kind: Kind, key: &[u8], value: &[u8]) -> Result<bool> {
        let mut conn = self.conns[worker % self.conns.len()].clone();
        let outcome = match kind {
            Kind::Put => conn
                .put(key, value.to_vec(), Duration::ZERO)
                .await
                .map(|_| true),
            Kind::Get => conn.get(key, false).await.map(|_| true),
            Kind::Delete => conn.delete(key).await.map(|w| w.existed),
        };
        match outcome {
            Err(Error::NotFound(_)) => Ok(false),
            other => other,
        }
    }
}

/// One benchmark run's parameters.
#[derive(Clone, Debug)]
pub struct Workload {
    pub ops: u64,
    pub concurrency: usize,
    pub value_size: usize,
    pub mix: Mix,
    /// Keys are drawn uniformly from `bench-0 .. bench-(keys-1)`.
    pub keys: u64,
}

/// Figures of one kind of operation.
pub struct KindReport {
    pub kind: Kind,
    pub ok: u64,
    /// Gets and deletes that found nothing.
    pub missing: u64,
    pub errors: u64,
    /// Latencies of successful operations, in microseconds.
    pub latency: Histogram<u64>,
}

/// What a run measured.
pub struct Report {
    pub elapsed: Duration,
    pub kinds: Vec<KindReport>,
    /// The first few distinct error messages.
    pub error_samples: Vec<String>,
}

impl Report {
    pub fn completed(&self) -> u64 {
        self.kinds.iter().map(|k| k.ok + k.missing).sum()
    }

    pub fn errors(&self) -> u64 {
        self.kinds.iter().map(|k| k.errors).sum()
    }

    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        self.completed() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} operations in {:.2} s: {:.0} ops/s, {} errors",
            self.completed(),
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.errors()
        )?;
        writeln!(
            f,
            "{:<7} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "op", "count", "missing", "errors", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
        )?;
        for k in &self.kinds {
            let q = |q: f64| k.latency.value_at_quantile(q);
            writeln!(
                f,
                "{:<7} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}",
                k.kind.name(),
                k.ok + k.missing,
                k.missing,
                k.errors,
                q(0.5),
                q(0.99),
                q(0.999),
                k.latency.max()
            )?;
        }
        for sample in &self.error_samples {
            writeln!(f, "error: {sample}")?;
        }
        Ok(())
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Runs `workload` against `target`; `progress` is called with the number
/// of operations finished, now and then.
pub async fn run(
    target: Arc<dyn Target>,
    workload: &Workload,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<Report> {
    if workload.concurrency == 0 || workload.keys == 0 {
        return Err(Error::InvalidArgument(
            "concurrency and keys must be at least 1".into(),
        ));
    }
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(Mutex::new(Vec::<String>::new()));
    let progress = Arc::new(progress);
    let value: Arc<Vec<u8>> = Arc::new((0..workload.value_size).map(|i| i as u8).collect());
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..workload.concurrency {
        let (target, next, done, samples, progress, value) = (
            target.clone(),
            next.clone(),
            done.clone(),
            samples.clone(),
            progress.clone(),
            value.clone(),
        );
        let workload = workload.clone();
        workers.push(tokio::spawn(async move {
            let mut kinds: Vec<KindReport> = Kind::ALL
                .iter()
                .map(|&kind| KindReport {
                    kind,
                    ok: 0,
                    missing: 0,
                    errors: 0,
                    latency: new_histogram(),
                })
                .collect();
            let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
            while next.fetch_add(1, Ordering::Relaxed) < workload.ops {
                let kind = workload.mix.pick(&mut rng);
                let key = format!("bench-{}", rng.random_range(0..workload.keys));
                let began = Instant::now();
                let outcome = target.run(worker, kind, key.as_bytes(), &value).await;
                let micros = began.elapsed().as_micros().max(1) as u64;
                let report = &mut kinds[Kind::ALL.iter().position(|k| *k == kind).expect("kind")];
                match outcome {
                    Ok(found) => {
                        if found {
                            report.ok += 1;
                        } else {
                            report.missing += 1;
                        }
                        report.latency.saturating_record(micros);
                    }
                    Err(error) => {
                        report.errors += 1;
                        let mut samples = samples.lock().expect("samples lock");
                        let text = error.to_string();
                        if samples.len() < 5 && !samples.contains(&text) {
                            samples.push(text);
                        }
                    }
                }
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if finished % 256 == 0 {
                    progress(finished);
                }
            }
            kinds
        }));
    }
    let mut totals: Vec<KindReport> = Vec::new();
    for worker in workers {
        let kinds = worker
            .await
            .map_err(|e| Error::Unavailable(format!("a benchmark worker failed: {e}")))?;
        for kind in kinds {
            match totals.iter_mut().find(|t| t.kind == kind.kind) {
                Some(total) => {
                    total.ok += kind.ok;
                    total.missing += kind.missing;
                    total.errors += kind.errors;
                    total.latency.add(&kind.latency).expect("same bounds");
                }
                None => totals.push(kind),
            }
        }
    }
    progress(done.load(Ordering::Relaxed));
    let elapsed = started.elapsed();
    totals.retain(|k| k.ok + k.missing + k.errors > 0);
    let error_samples = samples.lock().expect("samples lock").clone();
    Ok(Report {
        elapsed,
        kinds: totals,
        error_samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_print() {
        let mix: Mix = "put:50,get:50".parse().unwrap();
        assert_eq!(mix.to_string(), "put:50,get:50");
        assert_eq!("get:1".parse::<Mix>().unwrap().to_string(), "get:1");
        assert!("put:0".parse::<Mix>().is_err());
        assert!("read:5".parse::<Mix>().is_err());
        assert!("put=5".parse::<Mix>().is_err());
        assert!("put:x".parse::<Mix>().is_err());
    }

    #[test]
    fn picks_follow_the_weights() {
        let mix: Mix = "put:1,get:3".parse().unwrap();
        let mut rng = rand::rng();
        let gets = (0..10_000)
            .filter(|_| mix.pick(&mut rng) == Kind::Get)
            .count();
        assert!((7_000..8_000).contains(&gets), "{gets} gets of 10000");
        assert!((0..1000).all(|_| mix.pick(&mut rng) != Kind::Delete));
    }

    /// Counts calls; every get of an odd key finds nothing.
    struct Counting(AtomicU64);

    #[tonic::async_trait]
    impl Target for Counting {
        async fn run(&self, _: usize, kind: Kind, key: &[u8], _: &[u8]) -> Result<bool> {
            self.0.fetch_add(1, Ordering::Relaxed);
            if key == b"bench-13" {
                return Err(Error::Unavailable("thirteen".into()));
            }
            Ok(kind != Kind::Get || key.last().unwrap() % 2 == 0)
        }
    }

    #[tokio::test]
    async fn a_run_does_exactly_the_operations_asked_and_counts_each_outcome() {
        let target = Arc::new(Counting(AtomicU64::new(0)));
        let workload = Workload {
            ops: 5_000,
            concurrency: 7,
            value_size: 10,
            mix: "put:1,get:1".parse().unwrap(),
            keys: 20,
        };
        let report = run(target.clone(), &workload, |_| {}).await.unwrap();
        assert_eq!(target.0.load(Ordering::Relaxed), 5_000);
        assert_eq!(report.completed() + report.errors(), 5_000);
        assert!(report.errors() > 0);
        assert_eq!(report.error_samples, vec!["unavailable: thirteen"]);
        let gets = report.kinds.iter().find(|k| k.kind == Kind::Get).unwrap();
        assert!(gets.missing > 0 && gets.ok > 0);
        assert_eq!(gets.latency.len(), gets.ok + gets.missing);
    }
}
