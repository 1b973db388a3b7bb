//! A small mutation fuzzer for the parsers that read what strangers send:
//! each target starts from valid inputs (its seeds) and runs mutated ones
//! (bits flipped, bytes set to edge values, ranges inserted, deleted,
//! duplicated or spliced from another seed, truncation, random bytes) for a
//! time budget, catching any panic and reporting the input that caused it
//! as hex, to become a regression seed. No coverage guidance: this runs on
//! stable Rust in `cargo test`, seconds per target (`CAIRN_FUZZ_SECS`,
//! default 2); `scripts/bench fuzz` runs each for a minute.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Bytes that tend to matter to parsers.
const EDGES: &[u8] = &[
    0, 0xff, 0x7f, 0x80, b'%', b'&', b'=', b'/', b'.', b'\n', b'\r', b',', b';', b'"', b'{', b'}',
];

/// The time budget per target.
pub fn budget() -> Duration {
    let secs = std::env::var("CAIRN_FUZZ_SECS").ok().and_then(|s| s.parse::<f64>().ok());
    Duration::from_secs_f64(secs.unwrap_or(2.0))
}

/// One mutation of `input`, drawing from `seeds` for splices.
pub fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, seeds: &[Vec<u8>], max_len: usize) {
    let len = input.len();
    match rng.gen_range(0..9) {
        0 if len > 0 => {
            let i = rng.gen_range(0..len);
            input[i] ^= 1 << rng.gen_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.gen_range(0..len);
            input[i] = EDGES[rng.gen_range(0..EDGES.len())];
        }
        2 => {
            let i = rng.gen_range(0..=len);
            let n = rng.gen_range(1..16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            input.splice(i..i, bytes);
        }
        3 if len > 0 => {
            let a = rng.gen_range(0..len);
            let b = rng.gen_range(a..=len.min(a + 64));
            input.drain(a..b);
        }
        4 if len > 0 => {
            let a = rng.gen_range(0..len);
            let b = rng.gen_range(a..=len.min(a + 64));
            let piece = input[a..b].to_vec();
            let at = rng.gen_range(0..=input.len());
            input.splice(at..at, piece);
        }
        5 if !seeds.is_empty() => {
            let other = &seeds[rng.gen_range(0..seeds.len())];
            if !other.is_empty() {
                let a = rng.gen_range(0..other.len());
                let b = rng.gen_range(a..=other.len());
                let at = rng.gen_range(0..=input.len());
                input.splice(at..at, other[a..b].iter().copied());
            }
        }
        6 if len > 0 => input.truncate(rng.gen_range(0..len)),
        7 if len >= 4 => {
            // An integer field set to an edge value.
            let i = rng.gen_range(0..len - 3);
            let v: u32 = [0, 1, u32::MAX, u32::MAX / 2 + 1, 0x7fff_ffff][rng.gen_range(0..5)];
            input[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        _ => {
            let n = rng.gen_range(0..64);
            *input = (0..n).map(|_| rng.gen()).collect();
        }
    }
    input.truncate(max_len);
}

/// What one target's run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub executions: u64,
}

/// Runs `target` on mutations of `seeds` for [`budget`]; panics (with the
/// input in hex) if the target panicked on one.
pub fn run(name: &str, seeds: &[&[u8]], max_len: usize, mut target: impl FnMut(&[u8])) -> Report {
    let seed = std::env::var("CAIRN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    let deadline = Instant::now() + budget();
    let mut executions = 0u64;
    // The seeds themselves first: they must pass as they are.
    let mut queue: Vec<Vec<u8>> = seeds.clone();
    while Instant::now() < deadline || !queue.is_empty() {
        let input = match queue.pop() {
            Some(i) => i,
            None => {
                let mut i = if seeds.is_empty() {
                    Vec::new()
                } else {
                    seeds[rng.gen_range(0..seeds.len())].clone()
                };
                for _ in 0..rng.gen_range(1..5) {
                    mutate(&mut rng, &mut i, &seeds, max_len);
                }
                i
            }
        };
        executions += 1;
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            panic!(
                "fuzz {name}: crash after {executions} executions (CAIRN_FUZZ_SEED={seed}); input (hex): {}",
                hex_of(&input)
            );
        }
    }
    println!("fuzz {name}: {executions} executions in {:?}, 0 crashes (seed {seed})", budget());
    Report { executions }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_in_bounds() {
        let mut rng = StdRng::seed_from_u64(1);
        let seeds = vec![b"Action=DescribeVolumes".to_vec(), Vec::new()];
        let mut input = seeds[0].clone();
        for _ in 0..10_000 {
            mutate(&mut rng, &mut input, &seeds, 128);
            assert!(input.len() <= 128);
        }
    }
}
