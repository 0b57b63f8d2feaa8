//! A tiny deterministic random number generator (SplitMix64) for seeded weights and synthetic
//! inputs.
//!
//! Hand-written rather than taken from `rand` so that a seed means the same numbers forever,
//! on every platform: tests and `cnnc run` outputs recorded today stay valid. Each tensor gets
//! its own stream, derived from the seed and the tensor's name, so a tensor's values do not
//! depend on which other tensors exist or in which order they are generated.

/// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit state, passes BigCrush, trivially seedable.
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// A generator for the tensor called `name`, independent of every other tensor's.
    pub(crate) fn for_stream(seed: u64, name: &str) -> SplitMix64 {
        // FNV-1a of the name, then mixed with the seed through one SplitMix step so that
        // nearby seeds and similar names still start far apart.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut mixer = SplitMix64::new(seed ^ hash.rotate_left(17));
        SplitMix64::new(mixer.next_u64() ^ hash)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), with 24 random bits: every value is exactly representable in f32.
    pub(crate) fn next_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [low, high).
    pub(crate) fn uniform(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * self.next_unit()
    }
}
