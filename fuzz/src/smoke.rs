//! The smoke pass `make test` runs: each target on its seeds, then on a fixed number of
//! mutations of them chosen by a fixed random seed, so a failure repeats exactly. No
//! coverage guidance (that is `make fuzz`): it shows in CI that a target still builds and
//! that no parser panics on its seeds or on their near neighbours.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::{seeds, Target};

/// xorshift64*: small, fast and the same everywhere.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is moved off zero).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n` (which must not be 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Bytes that mean something to some parser, inserted whole by [`mutate`].
const TOKENS: &[&[u8]] = &[
    b" ",
    b"\n",
    b"\"",
    b"=",
    b"\\",
    b"#",
    b"--",
    b"/",
    b"..",
    b"\0",
    b":",
    b"*",
    b"[",
    b"\\040",
    b"070701",
    b"TRAILER!!!",
    b"ostree=",
    b"root=",
    b"[origin]",
    b"refspec=",
    b"\xff\xff\xff\xff",
];

/// Changes `data` in place by one of the usual byte-level mutations, or splices in part of
/// another input from `pool`.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], max_len: usize) {
    let at = |rng: &mut Rng, len: usize| rng.below(len + 1);
    match rng.below(8) {
        0 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] = rng.next_u64() as u8;
        }
        2 => {
            let i = at(rng, data.len());
            data.insert(i, rng.next_u64() as u8);
        }
        3 if !data.is_empty() => {
            let i = rng.below(data.len());
            let n = 1 + rng.below((data.len() - i).min(16));
            data.drain(i..i + n);
        }
        4 => {
            let t = TOKENS[rng.below(TOKENS.len())];
            let i = at(rng, data.len());
            data.splice(i..i, t.iter().copied());
        }
        5 if !data.is_empty() => {
            let i = rng.below(data.len());
            let n = 1 + rng.below((data.len() - i).min(64));
            let chunk = data[i..i + n].to_vec();
            let j = at(rng, data.len());
            data.splice(j..j, chunk);
        }
        6 if !data.is_empty() => {
            // An interesting number over 1, 2, 4 or 8 bytes.
            let v: u64 = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0xffff_ffff, u64::MAX][rng.below(8)];
            let w = [1, 2, 4, 8][rng.below(4)].min(data.len());
            let i = rng.below(data.len() - w + 1);
            data[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
        }
        _ => {
            let other = &pool[rng.below(pool.len())];
            if !other.is_empty() {
                let i = rng.below(other.len());
                let n = 1 + rng.below(other.len() - i);
                let j = at(rng, data.len());
                data.splice(j..j, other[i..i + n].iter().copied());
            }
        }
    }
    data.truncate(max_len);
}

/// Runs one input (the second argument) for the input (the first), checking what it costs.
pub type Guard = dyn Fn(&[u8], &mut dyn FnMut());

/// What a smoke pass did.
#[derive(Debug)]
pub struct Report {
    /// Inputs run, seeds included.
    pub inputs: usize,
    /// Wall time of the pass.
    pub elapsed: Duration,
    /// The slowest input's time.
    pub slowest: Duration,
}

/// Runs `target` on its seeds and then on up to `mutations` mutated inputs from random seed
/// `seed`, stopping early once `budget` has passed (the inputs are always the same ones, in
/// the same order; a slow machine runs fewer). Each input runs inside `guard`, which may
/// check what running it cost. A failing input is saved as `fuzz-smoke-<target>.crash` in
/// the temporary directory and the pass panics saying so.
pub fn run(
    target: &Target,
    mutations: usize,
    budget: Duration,
    seed: u64,
    guard: &Guard,
) -> Report {
    let mut pool = seeds::committed(target.name);
    pool.extend(seeds::generated(target.name));
    pool.push(Vec::new());
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut rng = Rng::new(seed);
    let mut once = |input: &[u8]| {
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| {
            guard(input, &mut || (target.run)(input))
        }));
        if r.is_err() {
            let p = std::env::temp_dir().join(format!("fuzz-smoke-{}.crash", target.name));
            let _ = std::fs::write(&p, input);
            panic!(
                "target {} failed on {:?} (saved as {})",
                target.name,
                String::from_utf8_lossy(input),
                p.display()
            );
        }
        slowest = slowest.max(t.elapsed());
    };
    for s in &pool {
        once(&s[..s.len().min(target.max_len)]);
    }
    let mut mutated = 0;
    while mutated < mutations && start.elapsed() < budget {
        mutated += 1;
        let mut input = pool[rng.below(pool.len())].clone();
        for _ in 0..1 + rng.below(8) {
            mutate(&mut rng, &mut input, &pool, target.max_len);
        }
        once(&input);
    }
    Report {
        inputs: pool.len() + mutated,
        elapsed: start.elapsed(),
        slowest,
    }
}
