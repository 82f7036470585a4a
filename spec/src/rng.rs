//! The spec's one seeded generator: SplitMix64, restated here so that the spec depends
//! on no generator crate and on nothing of the engine (whose `polyattn::rng` is its own
//! copy of the same published algorithm). Used for the model's random parameters and
//! examples, the lemma instances, the AS24 lower-bound instances and the tests.

/// SplitMix64 (Steele, Lea, Flood 2014), small enough to restate.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose state starts at `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next output: `state += 0x9E3779B97F4A7C15`, then the SplitMix64
    /// finaliser of the new state.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `k - 32` for `k = next_u64() % 65`: uniform in `-32..=32`.
    pub fn small(&mut self) -> i64 {
        (self.next_u64() % 65) as i64 - 32
    }

    /// `next_u64() % bound` (`bound >= 1`; `0` gives `0`).
    pub fn below(&mut self, bound: usize) -> usize {
        match bound as u64 {
            0 => 0,
            b => (self.next_u64() % b) as usize,
        }
    }
}
