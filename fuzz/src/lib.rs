//! microbatch-fuzz: bad input at every edge. Each [`edges::Edge`] is a parser that meets bytes
//! from outside; [`run`] feeds it mutations ([`mutate`]) of its valid seeds and checks the
//! invariants on every input:
//!
//! - no panic (caught, reported with the input);
//! - no hang: an input that takes longer than [`SLOW`] is a finding, and a watchdog aborts the
//!   process, saving the input, if one runs past [`HUNG`];
//! - memory bounded: what an input makes the parser hold at its peak stays within
//!   [`memory::bound`] of its size;
//! - a refusal says what was wrong: an empty message, or one an edge's own checks flag (`BUG:`),
//!   is a finding.
//!
//! Findings are kept under `fuzz/regressions/<edge>/` and replayed by the tests.

pub mod aws;
pub mod edges;
pub mod http;
pub mod memory;
pub mod mutate;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edges::Edge;
use mutate::{Rng, mutate};

/// An input slower than this is a finding (the parsers are linear; the largest input is a few
/// hundred KiB).
pub const SLOW: Duration = Duration::from_secs(2);
/// An input still running after this is a hang: the watchdog saves it and aborts.
pub const HUNG: Duration = Duration::from_secs(20);

/// What went wrong with one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub edge: &'static str,
    pub what: String,
    pub input: Vec<u8>,
}

/// A run's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub inputs: u64,
    pub accepted: u64,
    pub refused: u64,
}

/// Runs one input through `edge`, checking the invariants.
pub fn check(edge: &Edge, input: &[u8]) -> Result<bool, String> {
    let started = Instant::now();
    let mark = memory::Mark::set();
    let answer = std::panic::catch_unwind(AssertUnwindSafe(|| (edge.run)(input)));
    let held = mark.peak_above();
    let took = started.elapsed();
    let accepted = match answer {
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            return Err(format!("panic: {message}"));
        }
        Ok(Ok(())) => true,
        Ok(Err(message)) if message.trim().is_empty() => return Err("refused without a message".into()),
        Ok(Err(message)) if message.starts_with("BUG") => return Err(message),
        Ok(Err(_)) => false,
    };
    if took > SLOW {
        return Err(format!("slow: {took:?} for {} bytes", input.len()));
    }
    if held > memory::bound(input.len()) {
        return Err(format!(
            "memory: {held} bytes held for {} bytes of input",
            input.len()
        ));
    }
    Ok(accepted)
}

/// Runs `edge` once on a seed, unchecked: what it sets up once per thread (a server, a parsed
/// catalog) is not the first input's to pay for in the memory bound.
pub fn warm(edge: &Edge) {
    if let Some(seed) = (edge.seeds)().first() {
        let _ = (edge.run)(seed);
    }
}

/// Fuzzes `edge` from `seed` until `inputs` inputs or `until`, whichever comes first; a hang
/// aborts the process after saving the input under `save` (if given).
pub fn run(
    edge: &Edge,
    seed: u64,
    inputs: u64,
    until: Option<Instant>,
    save: Option<&Path>,
) -> (Stats, Vec<Finding>) {
    let corpus = (edge.seeds)();
    assert!(!corpus.is_empty(), "{} has no seeds", edge.name);
    warm(edge);
    let watch = Watchdog::start(edge.name, save.map(Path::to_path_buf));
    let mut rng = Rng::new(seed);
    let mut stats = Stats::default();
    let mut findings = Vec::new();
    while stats.inputs < inputs && until.is_none_or(|t| Instant::now() < t) {
        let base = &corpus[rng.below(corpus.len() as u64) as usize];
        let other = &corpus[rng.below(corpus.len() as u64) as usize];
        let input = mutate(&mut rng, base, other);
        watch.enter(&input);
        match check(edge, &input) {
            Ok(true) => stats.accepted += 1,
            Ok(false) => stats.refused += 1,
            Err(what) => findings.push(Finding {
                edge: edge.name,
                what,
                input,
            }),
        }
        watch.leave();
        stats.inputs += 1;
    }
    watch.stop();
    (stats, findings)
}

/// Aborts the process when one input runs past [`HUNG`], after saving it.
struct Watchdog {
    started_ms: Arc<AtomicU64>,
    current: Arc<Mutex<Vec<u8>>>,
    done: Arc<AtomicBool>,
    epoch: Instant,
}

impl Watchdog {
    fn start(edge: &'static str, save: Option<std::path::PathBuf>) -> Watchdog {
        let w = Watchdog {
            started_ms: Arc::new(AtomicU64::new(0)),
            current: Arc::new(Mutex::new(Vec::new())),
            done: Arc::new(AtomicBool::new(false)),
            epoch: Instant::now(),
        };
        let (started, current, done, epoch) =
            (w.started_ms.clone(), w.current.clone(), w.done.clone(), w.epoch);
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let at = started.load(Ordering::Relaxed);
                let now = epoch.elapsed().as_millis() as u64;
                if at != 0 && now.saturating_sub(at) > HUNG.as_millis() as u64 {
                    let input = current.lock().map(|i| i.clone()).unwrap_or_default();
                    let kept = save
                        .as_deref()
                        .and_then(|dir| keep(dir, edge, "hang", &input).ok())
                        .map_or_else(String::new, |p| format!(", kept as {}", p.display()));
                    eprintln!(
                        "microbatch-fuzz: {edge}: an input of {} bytes ran past {HUNG:?}{kept}",
                        input.len()
                    );
                    std::process::abort();
                }
            }
        });
        w
    }

    fn enter(&self, input: &[u8]) {
        if let Ok(mut c) = self.current.lock() {
            c.clear();
            c.extend_from_slice(input);
        }
        self.started_ms
            .store(self.epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    fn leave(&self) {
        self.started_ms.store(0, Ordering::Relaxed);
    }

    fn stop(self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Saves a finding's input as `<dir>/<edge>/<what>-<fnv hash>.bin`.
pub fn keep(dir: &Path, edge: &str, what: &str, input: &[u8]) -> std::io::Result<std::path::PathBuf> {
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let kind: String = what.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let path = dir.join(edge).join(format!("{kind}-{hash:016x}.bin"));
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    std::fs::write(&path, input)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(run: fn(&[u8]) -> Result<(), String>) -> Edge {
        Edge {
            name: "test",
            seeds: || vec![b"x".to_vec()],
            run,
        }
    }

    /// Each invariant, broken on purpose, is a finding; a refusal with a message is not.
    #[test]
    fn each_broken_invariant_is_a_finding() {
        let panics = edge(|_| panic!("boom"));
        assert_eq!(check(&panics, b"x"), Err("panic: boom".into()));
        let greedy = edge(|input| {
            let held = vec![1u8; memory::bound(input.len()) + 1];
            std::hint::black_box(&held);
            Ok(())
        });
        assert!(check(&greedy, b"x").unwrap_err().starts_with("memory: "));
        let mute = edge(|_| Err(" ".into()));
        assert_eq!(check(&mute, b"x"), Err("refused without a message".into()));
        let flagged = edge(|_| Err("BUG: answered 500".into()));
        assert_eq!(check(&flagged, b"x"), Err("BUG: answered 500".into()));
        let refuses = edge(|_| Err("400 malformed: not JSON".into()));
        assert_eq!(check(&refuses, b"x"), Ok(false));
        let accepts = edge(|input| {
            std::hint::black_box(input.to_vec());
            Ok(())
        });
        assert_eq!(check(&accepts, b"x"), Ok(true));
    }
}
