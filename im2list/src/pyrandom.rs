//! CPython 3's `random` module, as far as `im2rec.py --list` uses it: `random.seed(int)`
//! and `random.shuffle(list)`, bit for bit.
//!
//! CPython's generator is MT19937. `seed(n)` for an integer `n` splits `abs(n)` into
//! 32-bit words, least significant first (`[0]` for zero), and feeds them to the
//! reference `init_by_array`. `shuffle` is Fisher–Yates from the end; each swap index
//! comes from `_randbelow(i + 1)`, which draws `getrandbits(k)` with
//! `k = (i + 1).bit_length()` and retries until the value is in range.
//! `getrandbits(k)` for `k <= 32` is the top `k` bits of one 32-bit output; for larger
//! `k` it fills 32-bit words least significant first. Python 2 shuffled with
//! `int(random() * (i + 1))` instead, so its order differs for the same seed.

/// Degree of recurrence of MT19937.
const N: usize = 624;
/// Middle word offset.
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The state of CPython's `random.Random`, seeded like `random.seed(n)`.
#[derive(Clone)]
pub struct PyRandom {
    mt: Box<[u32; N]>,
    mti: usize,
}

impl std::fmt::Debug for PyRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRandom").field("mti", &self.mti).finish()
    }
}

impl PyRandom {
    /// A generator in the state CPython's `random.seed(seed)` leaves it in.
    pub fn new(seed: u64) -> Self {
        let lo = seed as u32;
        let hi = (seed >> 32) as u32;
        let key: &[u32] = if hi == 0 { &[lo] } else { &[lo, hi] };
        let mut rng = PyRandom {
            mt: Box::new([0; N]),
            mti: N + 1,
        };
        rng.init_by_array(key);
        rng
    }

    fn init_genrand(&mut self, s: u32) {
        let mt = &mut self.mt;
        mt[0] = s;
        for i in 1..N {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        self.mti = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let mt = &mut self.mt;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            mt[i] = (mt[i] ^ (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            mt[i] = (mt[i] ^ (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
    }

    /// The next raw 32-bit output (CPython's `genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.mti >= N {
            let mt = &mut self.mt;
            let mag = |y: u32| if y & 1 == 0 { 0 } else { MATRIX_A };
            for kk in 0..N - M {
                let y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
                mt[kk] = mt[kk + M] ^ (y >> 1) ^ mag(y);
            }
            for kk in N - M..N - 1 {
                let y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
                mt[kk] = mt[kk + M - N] ^ (y >> 1) ^ mag(y);
            }
            let y = (mt[N - 1] & UPPER_MASK) | (mt[0] & LOWER_MASK);
            mt[N - 1] = mt[M - 1] ^ (y >> 1) ^ mag(y);
            self.mti = 0;
        }
        let mut y = self.mt[self.mti];
        self.mti += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `random.getrandbits(k)` for `0 <= k <= 64`.
    ///
    /// # Panics
    /// If `k > 64` (CPython supports any `k`; this crate never needs more).
    pub fn getrandbits(&mut self, k: u32) -> u64 {
        assert!(k <= 64, "getrandbits({k}) is limited to 64 bits here");
        if k == 0 {
            return 0;
        }
        if k <= 32 {
            return u64::from(self.next_u32() >> (32 - k));
        }
        // Two words, least significant first; the second keeps its top k-32 bits.
        let lo = u64::from(self.next_u32());
        let hi = u64::from(self.next_u32() >> (64 - k));
        lo | (hi << 32)
    }

    /// `random._randbelow(n)`: a uniform integer in `0..n`, for `n >= 1`.
    pub fn randbelow(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let k = u64::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// `random.shuffle(x)`: Fisher–Yates from the last element down to the second.
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.randbelow(i as u64 + 1) as usize;
            x.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors written by CPython 3.11 (the generating code is in the file's header):
    /// each line is `seed kind n: values…`.
    const VECTORS: &str = include_str!("../tests/golden/pyrandom_vectors.txt");

    #[test]
    fn seed_100_matches_cpython() {
        let mut rng = PyRandom::new(100);
        let first: Vec<u64> = (0..3).map(|_| rng.getrandbits(32)).collect();
        assert_eq!(first, [625_644_691, 1_973_661_107, 1_953_896_601]);

        let mut five: Vec<u32> = (0..5).collect();
        PyRandom::new(100).shuffle(&mut five);
        assert_eq!(five, [2, 0, 4, 3, 1]);

        let mut ten: Vec<u32> = (0..10).collect();
        PyRandom::new(100).shuffle(&mut ten);
        assert_eq!(ten, [4, 0, 5, 9, 3, 1, 6, 8, 7, 2]);
    }

    #[test]
    fn short_lists_draw_nothing_or_one_swap() {
        let mut empty: Vec<u8> = vec![];
        PyRandom::new(100).shuffle(&mut empty);
        let mut one = vec![7];
        PyRandom::new(100).shuffle(&mut one);
        assert_eq!(one, [7]);
    }

    #[test]
    fn cpython_vector_file() {
        let mut checked = 0;
        for line in VECTORS
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (head, values) = line.split_once(':').expect("`head: values`");
            let head: Vec<&str> = head.split_whitespace().collect();
            let seed: u64 = head[0].parse().unwrap();
            let n: u64 = head[2].parse().unwrap();
            let want: Vec<u64> = values
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            let mut rng = PyRandom::new(seed);
            let got: Vec<u64> = match head[1] {
                "shuffle" => {
                    let mut v: Vec<u64> = (0..n).collect();
                    rng.shuffle(&mut v);
                    v
                }
                "bits" => (0..want.len()).map(|_| rng.getrandbits(n as u32)).collect(),
                "below" => (0..want.len()).map(|_| rng.randbelow(n)).collect(),
                other => panic!("unknown vector kind {other}"),
            };
            assert_eq!(got, want, "{line:.60}");
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} vectors");
    }
}
