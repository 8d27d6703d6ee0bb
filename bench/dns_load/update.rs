//! Record-store update latency: flip the readiness of one shard in `<cluster>/flip.json` and poll
//! fedns over UDP until the zonal name's answer changes (addresses ↔ CNAME). The new file is written
//! next to the source and renamed into place, so fedns never reads a half-written file.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::rr::RecordType;

use crate::artifacts::{self, FLIP_FILE};
use crate::federation::{FlipTarget, QType};
use crate::probe::Probe;

#[derive(Debug, Clone, serde::Serialize)]
pub struct UpdateLatency {
    pub flips: usize,
    pub timeouts: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Addresses,
    Cname,
    Other,
}

fn shape(probe: &mut Probe, name: &str, qtype: QType) -> Shape {
    match probe.query_raw(name, qtype.code(), Duration::from_millis(200)) {
        Ok(message) => match message.answers.first().map(|r| r.record_type()) {
            Some(RecordType::CNAME) => Shape::Cname,
            Some(RecordType::A | RecordType::AAAA) => Shape::Addresses,
            _ => Shape::Other,
        },
        Err(_) => Shape::Other,
    }
}

/// Flips `flips` times (bounded by `budget` overall and 5 s per flip) and reports the latency from
/// the rename to the first changed answer. The shard is left ready at the end.
pub fn measure(
    target: &FlipTarget,
    cluster_dir: &Path,
    staging_dir: &Path,
    dns: SocketAddr,
    flips: usize,
    budget: Duration,
) -> Result<UpdateLatency> {
    fs::create_dir_all(staging_dir)?;
    let live = cluster_dir.join(FLIP_FILE);
    let staged = staging_dir.join(FLIP_FILE);
    let mut probe = Probe::new(dns)?;
    let name = target.zonal_name.as_str();
    if shape(&mut probe, name, target.qtype) != Shape::Addresses {
        bail!(
            "{name} {} does not answer with addresses before the first flip: is {} read by fedns?",
            target.qtype.as_str(),
            live.display()
        );
    }
    let per_flip = Duration::from_secs(5);
    let started = Instant::now();
    let mut ready = true;
    let mut samples = Vec::with_capacity(flips);
    let mut timeouts = 0;
    for _ in 0..flips {
        if started.elapsed() >= budget {
            break;
        }
        ready = !ready;
        let want = if ready {
            Shape::Addresses
        } else {
            Shape::Cname
        };
        fs::write(&staged, artifacts::flip_contents(target, ready))?;
        let t0 = Instant::now();
        fs::rename(&staged, &live)
            .with_context(|| format!("renaming {} to {}", staged.display(), live.display()))?;
        loop {
            if shape(&mut probe, name, target.qtype) == want {
                samples.push(t0.elapsed());
                break;
            }
            if t0.elapsed() > per_flip {
                timeouts += 1;
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        // Let the watcher settle so consecutive flips are separate changes.
        std::thread::sleep(Duration::from_millis(20));
    }
    if !ready {
        fs::write(&staged, artifacts::flip_contents(target, true))?;
        fs::rename(&staged, &live)?;
    }
    if samples.is_empty() {
        bail!("no flip was observed within {per_flip:?} ({timeouts} timeouts)");
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1e3
    };
    Ok(UpdateLatency {
        flips: samples.len() + timeouts,
        timeouts,
        p50_ms: at(0.5),
        p90_ms: at(0.9),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    })
}
