use chordal::ring;
use chordal::sim::{Sim, SimConfig};
fn main() {
    let config = SimConfig {
        seed: 3,
        vnodes: 4,
        ring: ring::Config {
            successors: 4,
            ..ring::Config::default()
        },
        ..SimConfig::default()
    };
    let mut sim = Sim::new(config);
    let first = sim.add_first_host();
    println!("{:?}", sim.run_until_converged(120_000, true));
    for _ in 1..5 {
        sim.add_host(std::slice::from_ref(&first));
        sim.run_for(2000);
    }
    println!("{:?}", sim.run_until_converged(60_000, true));
    for addr in sim.host_addrs() {
        for m in sim.host(&addr).unwrap().members() {
            println!(
                "{} joined={} pred={:?} succ={:?}",
                m.me(),
                m.is_joined(),
                m.predecessor(),
                m.successors()
            );
        }
    }
    println!(
        "{:?}",
        sim.live_members()
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
    );
}
