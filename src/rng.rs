//! A small seeded pseudo-random generator (xorshift64*), for reproducible
//! tests, crash simulations and load generation. Not for secrets.

#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Any seed works; zero (which xorshift cannot leave) is remapped.
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n` must be positive).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_deterministic_and_covers_its_range() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        let mut seen = [false; 10];
        let mut rng = XorShift::new(0);
        for _ in 0..1000 {
            seen[rng.below(10)] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
