use chordal::ring;
use chordal::sim::{Sim, SimConfig};
fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(6);
    let config = SimConfig {
        seed,
        ring: ring::Config {
            successors: 4,
            ..ring::Config::default()
        },
        ..SimConfig::default()
    };
    let mut sim = Sim::new(config);
    let first = sim.add_first_host();
    let mut addrs = vec![first.clone()];
    sim.run_until_converged(120_000, true).unwrap();
    for _ in 1..12 {
        addrs.push(sim.add_host(std::slice::from_ref(&first)));
        sim.run_for_checked(2000, |sim| sim.check_ring().map(drop))
            .unwrap();
    }
    sim.run_until_converged(120_000, true).unwrap();
    sim.set_loss(0.2);
    for _ in 0..3 {
        sim.add_host(&addrs[..1]);
    }
    let dump = |sim: &Sim| {
        for addr in sim.host_addrs() {
            for m in sim.host(&addr).unwrap().members() {
                eprintln!(
                    "  {} pred={:?} succ={:?}",
                    m.me(),
                    m.predecessor().map(|p| p.id),
                    m.successors().iter().map(|s| s.id).collect::<Vec<_>>()
                );
            }
        }
    };
    let mut last_ok = 0;
    let selfish = |sim: &Sim| -> Result<(), String> {
        let n = sim.live_members().len();
        for addr in sim.host_addrs() {
            for m in sim.host(&addr).unwrap().members() {
                if n > 5 && m.successors().iter().any(|s| s.id == m.id()) {
                    return Err(format!(
                        "{} has self in {:?}",
                        m.me(),
                        m.successors().iter().map(|s| s.id).collect::<Vec<_>>()
                    ));
                }
            }
        }
        Ok(())
    };
    sim.set_trace(true);
    let r = sim.run_for_checked(20_000, |sim| selfish(sim));
    eprintln!("selfish: {r:?} at {}", sim.now());
    return;
    let trace_from: u64 = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(u64::MAX);
    let r = sim.run_for_checked(trace_from.saturating_sub(sim.now()).min(20_000), |sim| {
        sim.check_ring().map(drop)
    });
    eprintln!("{r:?} at {} before tracing", sim.now());
    dump(&sim);
    sim.set_trace(true);
    let r = sim.run_for_checked(20_000, |sim| {
        let r = sim.check_ring().map(drop);
        if r.is_ok() {
            last_ok = sim.now();
        }
        r
    });
    eprintln!("{r:?} at {} (last ok {last_ok})", sim.now());
    sim.crash(&addrs[5]);
    eprintln!("crashed {}", addrs[5]);
    let r = sim.run_for_checked(20_000, |sim| {
        let r = sim.check_ring().map(drop);
        if r.is_ok() {
            last_ok = sim.now();
        }
        r
    });
    eprintln!("{r:?} at {} (last ok {last_ok})", sim.now());
    dump(&sim);
}
