//! The mutator: a valid sample in, a broken one out, deterministically from a seed.
//!
//! Coverage-guided fuzzing (`cargo fuzz`, libFuzzer) needs a nightly toolchain, and AFL's
//! instrumentation a toolchain of its own; neither can be installed here. So the inputs are
//! structured mutations of valid samples, the kinds of breakage an edge meets: flipped bits,
//! truncation, splices of two samples, a chunk repeated (duplicated JSON keys, overlong lines),
//! deep nesting, huge numbers, invalid UTF-8, NUL and separator bytes. Starting from valid
//! samples keeps most inputs deep inside the parsers, past their first check. The generator is
//! the workload's SplitMix64: the same sequence for the same seed on every machine, so a finding
//! replays from its seed alone.

pub use microbatch_adapters::workload::Rng;

/// A number below `n` (0 when `n` is 0): an index into a slice.
fn below(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

/// Bytes the parsers give meaning to, tried in place of others.
const INTERESTING: &[u8] = b"\0\"\\{}[],:\n\r\t =&%+#'\xff\xc3\x80";

/// Fragments that break a parser in known ways: nesting, numbers out of range, invalid UTF-8,
/// escapes, separators.
const FRAGMENTS: &[&[u8]] = &[
    b"1e999999",
    b"-0.0e-999999",
    b"18446744073709551616",
    b"99999999999999999999999999999999",
    b"NaN",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\\u0000",
    b"\\ud800",
    b"\0",
    b"\"\"",
    b"null",
    b"\r\n",
    b"=\"",
];

/// One mutation of `input`, perhaps spliced with `other`: one to four operations.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=below(rng, 4) {
        apply(rng, &mut out, other);
    }
    out
}

fn apply(rng: &mut Rng, out: &mut Vec<u8>, other: &[u8]) {
    let len = out.len();
    match below(rng, 10) {
        // A flipped bit.
        0 if len > 0 => {
            let i = below(rng, len);
            out[i] ^= 1 << below(rng, 8);
        }
        // A byte the parser cares about, in place of another.
        1 if len > 0 => {
            let i = below(rng, len);
            out[i] = INTERESTING[below(rng, INTERESTING.len())];
        }
        // Truncated.
        2 => out.truncate(below(rng, len + 1)),
        // Spliced: a prefix of this one and a suffix of the other.
        3 => {
            let cut = below(rng, len + 1);
            let from = below(rng, other.len() + 1);
            out.truncate(cut);
            out.extend_from_slice(&other[from..]);
        }
        // A chunk repeated: duplicated keys and fields, overlong lines.
        4 if len > 0 => {
            let start = below(rng, len);
            let end = (start + 1 + below(rng, 64)).min(len);
            let chunk = out[start..end].to_vec();
            let times = [1, 2, 16, 1024][below(rng, 4)];
            let at = below(rng, out.len() + 1);
            let repeated: Vec<u8> = chunk.iter().copied().cycle().take(chunk.len() * times).collect();
            out.splice(at..at, repeated);
        }
        // Deep nesting.
        5 => {
            let depth = [10, 200, 5_000][below(rng, 3)];
            let (open, close) = if below(rng, 2) == 0 {
                (b'[', b']')
            } else {
                (b'{', b'}')
            };
            let at = below(rng, len + 1);
            let mut nested = vec![open; depth];
            if below(rng, 2) == 0 {
                nested.extend(std::iter::repeat_n(close, depth));
            }
            out.splice(at..at, nested);
        }
        // A known-bad fragment inserted, or in place of a run.
        6 | 7 => {
            let fragment = FRAGMENTS[below(rng, FRAGMENTS.len())];
            let at = below(rng, len + 1);
            let end = if below(rng, 2) == 0 {
                at
            } else {
                (at + below(rng, 8)).min(len)
            };
            out.splice(at..end, fragment.iter().copied());
        }
        // A run deleted.
        8 if len > 0 => {
            let start = below(rng, len);
            let end = (start + 1 + below(rng, 16)).min(len);
            out.drain(start..end);
        }
        // Random bytes inserted.
        _ => {
            let at = below(rng, len + 1);
            let n = 1 + below(rng, 8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            out.splice(at..at, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_inputs() {
        let sample = br#"{"a":1,"b":[true,null,"x"]}"#;
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..200)
                .map(|_| mutate(&mut rng, sample, b"other"))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn mutations_break_the_sample_in_many_ways() {
        let sample = br#"{"a":1,"b":[true,null,"x"]}"#;
        let mut rng = Rng::new(1);
        let outs: Vec<Vec<u8>> = (0..2_000).map(|_| mutate(&mut rng, sample, b"[1,2]")).collect();
        let invalid_json = outs
            .iter()
            .filter(|o| serde_json::from_slice::<serde_json::Value>(o).is_err())
            .count();
        assert!(invalid_json > 1_000, "most are broken: {invalid_json}");
        assert!(outs.iter().any(|o| o.len() > 4_000), "some are long");
        assert!(outs.iter().any(|o| o.len() < sample.len() / 2), "some are short");
        assert!(
            outs.iter().any(|o| std::str::from_utf8(o).is_err()),
            "some are not UTF-8"
        );
        assert!(outs.iter().any(|o| o.contains(&0)), "some hold NUL");
        assert!(
            outs.iter()
                .any(|o| o.starts_with(b"[[[[[[[[[[") || o.windows(10).any(|w| w == b"[[[[[[[[[["))
        );
    }
}
