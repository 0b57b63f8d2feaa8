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

    /// Moves the stream `n` values on, as `n` calls of [`next_u64`](Self::next_u64) would: the
    /// state only counts (a value depends on the state alone), so a part of a tensor can be
    /// generated without the values before it.
    pub(crate) fn skip(&mut self, n: u64) {
        self.state = self.state.wrapping_add(n.wrapping_mul(GAMMA));
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// Uniform in [0, 1), with 24 random bits: every value is exactly representable in f32.
    pub(crate) fn next_unit(&mut self) -> f32 {
        unit(self.next_u64())
    }

    /// Uniform in [low, high).
    pub(crate) fn uniform(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * self.next_unit()
    }

    /// Fills `out` with the next `out.len()` values of [`uniform`](Self::uniform), the same
    /// bits, several at a time: value `i` depends only on the state plus `(i + 1)·γ`, so
    /// the values are independent and the loop vectorizes (seeded weights are most of a
    /// large network's packing time). Uses AVX2 or AVX-512 where the CPU has them: integer
    /// arithmetic, an exact conversion, and one multiplication and one addition per value,
    /// rounded as in the scalar code.
    pub(crate) fn fill_uniform(&mut self, out: &mut [f32], low: f32, high: f32) {
        let start = self.state;
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512dq") && is_x86_feature_detected!("avx512vl") {
                // SAFETY: the CPU has the features the function is compiled for.
                unsafe { fill_uniform_avx512(out, start, low, high) };
            } else if is_x86_feature_detected!("avx2") {
                // SAFETY: as above.
                unsafe { fill_uniform_avx2(out, start, low, high) };
            } else {
                fill_uniform_from(out, start, low, high);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        fill_uniform_from(out, start, low, high);
        self.state = start.wrapping_add((out.len() as u64).wrapping_mul(GAMMA));
    }
}

/// SplitMix64's increment.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function of a state.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The top 24 bits of `z` as a number in [0, 1), exact in f32.
#[inline(always)]
fn unit(z: u64) -> f32 {
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// [`SplitMix64::fill_uniform`] from state `start`.
#[inline(always)]
fn fill_uniform_from(out: &mut [f32], start: u64, low: f32, high: f32) {
    let span = high - low;
    for (i, value) in out.iter_mut().enumerate() {
        let z = mix(start.wrapping_add((i as u64).wrapping_add(1).wrapping_mul(GAMMA)));
        *value = low + span * unit(z);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fill_uniform_avx2(out: &mut [f32], start: u64, low: f32, high: f32) {
    fill_uniform_from(out, start, low, high);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl")]
fn fill_uniform_avx512(out: &mut [f32], start: u64, low: f32, high: f32) {
    fill_uniform_from(out, start, low, high);
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    /// The vectorized fill gives the bits of the scalar generator, and leaves the state
    /// where the scalar one would, for lengths around every vector width.
    #[test]
    fn fill_uniform_is_the_scalar_stream() {
        for len in [0, 1, 3, 4, 7, 8, 15, 16, 17, 33, 1000] {
            let mut scalar = SplitMix64::for_stream(7, "w");
            let mut filled = SplitMix64::for_stream(7, "w");
            let expected: Vec<f32> = (0..len).map(|_| scalar.uniform(-0.3, 0.25)).collect();
            let mut found = vec![0.0; len];
            filled.fill_uniform(&mut found, -0.3, 0.25);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&found), bits(&expected), "{len}");
            assert_eq!(filled.next_u64(), scalar.next_u64(), "{len}");
            // The portable loop, which the vectorized ones compile, on any CPU.
            let mut portable = vec![0.0; len];
            super::fill_uniform_from(
                &mut portable,
                SplitMix64::for_stream(7, "w").state,
                -0.3,
                0.25,
            );
            assert_eq!(bits(&portable), bits(&expected), "{len}");
        }
    }

    /// Skipping `n` values lands where `n` draws would: a tensor generated in pieces is the
    /// tensor generated whole.
    #[test]
    fn skip_is_drawing_without_the_values() {
        for n in [0u64, 1, 5, 1000] {
            let mut drawn = SplitMix64::for_stream(3, "fc.weight");
            for _ in 0..n {
                drawn.next_u64();
            }
            let mut skipped = SplitMix64::for_stream(3, "fc.weight");
            skipped.skip(n);
            assert_eq!(skipped.next_u64(), drawn.next_u64(), "{n}");
        }
    }
}
