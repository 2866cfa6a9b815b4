//! API token secrets: generated, shown once, stored only as a hash.

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

/// Every secret starts with this, so a leaked one is recognisable (and greppable).
pub const SCHEME_PREFIX: &str = "plinth_";
/// Characters of the secret shown in listings.
pub const VISIBLE: usize = 14;

/// A new secret: the prefix and 40 random letters and digits (about 238 bits).
pub fn generate() -> String {
    format!(
        "{SCHEME_PREFIX}{}",
        Alphanumeric.sample_string(&mut rand::rng(), 40)
    )
}

/// What is stored: SHA-256 of the secret. The secret has enough entropy that a slow hash
/// adds nothing, and lookups stay one indexed query.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn visible_prefix(secret: &str) -> String {
    secret.chars().take(VISIBLE).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_recognisable() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with("plinth_"));
        assert_eq!(a.len(), 47);
        assert_eq!(visible_prefix(&a).len(), 14);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
    }
}
