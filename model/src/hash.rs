//! FNV-1a, 64 bit: a tiny hash whose values never change between releases or platforms, for
//! identifiers derived from content (trip ids, rejection ids) and for routing.

/// An FNV-1a hasher.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self::with_seed(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a64 {
    /// A hasher starting from `seed` instead of the standard offset basis.
    pub fn with_seed(seed: u64) -> Self {
        Fnv1a64(seed)
    }

    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a of `bytes` with the standard offset basis.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    Fnv1a64::default().write(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_never_change() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fnv1a64::default().write(b"a").write(b"b").finish(), fnv1a64(b"ab"));
    }
}
