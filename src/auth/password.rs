//! Passwords: the policy (NIST 800-63B: length and a blocklist, no composition rules) and
//! argon2id hashing, run off the async workers.

use std::collections::HashSet;
use std::sync::OnceLock;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordVerifier, Version};

/// The 20,000 most common passwords (Royce Williams' list, as Django bundles it).
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON_PASSWORDS.lines().map(str::trim).collect())
}

/// A password that passed the policy. Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    pub const MIN_LEN: usize = 8;
    pub const MAX_LEN: usize = 256;

    /// Checks a new password against the policy. `username` is refused as a password too.
    pub fn parse(raw: &str, username: &str) -> Result<Self, String> {
        let len = raw.chars().count();
        if len < Self::MIN_LEN {
            return Err(format!(
                "Use at least {} characters for the password.",
                Self::MIN_LEN
            ));
        }
        if len > Self::MAX_LEN {
            return Err(format!(
                "Use at most {} characters for the password.",
                Self::MAX_LEN
            ));
        }
        let lowered = raw.trim().to_lowercase();
        if common_passwords().contains(lowered.as_str()) {
            return Err("This password is too common; choose one that is harder to guess.".into());
        }
        if !username.is_empty() && lowered == username.trim().to_lowercase() {
            return Err("The password must not be the username.".into());
        }
        Ok(Password(raw.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// argon2id with m = 19 MiB, t = 2, p = 1 (OWASP's recommendation).
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes synchronously: call from a blocking thread.
fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = hasher()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    Ok(hash.to_string())
}

fn verify_blocking(candidate: &str, phc: &str) -> anyhow::Result<bool> {
    let parsed = PasswordHash::new(phc).map_err(|e| anyhow::anyhow!("stored hash invalid: {e}"))?;
    Ok(hasher()
        .verify_password(candidate.as_bytes(), &parsed)
        .is_ok())
}

/// Argon2 computations running at once. Each takes 19 MiB and a core for tens of milliseconds;
/// without a bound a burst of logins would take every blocking thread and the memory with them.
/// The bound is the process's (the memory is), so it lives here rather than per server.
static ARGON2: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Runs one argon2 computation on the blocking pool, waiting for a free slot first.
async fn argon2<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let _slot = ARGON2.acquire().await?;
    tokio::task::spawn_blocking(work).await?
}

/// Hashes a password on the blocking pool.
pub async fn hash(password: &Password) -> anyhow::Result<String> {
    let secret = password.0.clone();
    argon2(move || hash_blocking(&secret)).await
}

/// Verifies `candidate` against a stored hash on the blocking pool. When the user does not
/// exist, pass the [`dummy_hash`] so the answer takes as long as for a real account.
pub async fn verify(candidate: String, phc: String) -> anyhow::Result<bool> {
    argon2(move || verify_blocking(&candidate, &phc)).await
}

/// A hash of a random password with the same parameters as real ones, computed once per process.
pub async fn dummy_hash() -> anyhow::Result<String> {
    let random: String = uuid::Uuid::new_v4().simple().to_string();
    argon2(move || hash_blocking(&random)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_passwords_are_refused() {
        assert!(Password::parse("Tr0ub4!", "ada").is_err());
        assert!(Password::parse("tr0ub4dor", "ada").is_ok());
    }

    #[test]
    fn long_passwords_and_passphrases_are_allowed() {
        let passphrase = "correct horse battery staple ".repeat(3);
        assert!(Password::parse(&passphrase, "ada").is_ok());
        assert!(Password::parse(&"x7".repeat(64), "ada").is_ok());
        assert!(Password::parse(&"x".repeat(257), "ada").is_err());
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        assert!(Password::parse("password", "ada").is_err());
        assert!(Password::parse("PASSWORD1", "ada").is_err());
        assert!(Password::parse("iloveyou", "ada").is_err());
        assert!(common_passwords().len() >= 10_000);
    }

    #[test]
    fn the_username_is_not_a_password() {
        assert!(Password::parse("grace.hopper", "Grace.Hopper").is_err());
    }

    #[test]
    fn no_composition_rules() {
        assert!(Password::parse("lowercaseonlybutlong", "ada").is_ok());
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let p = Password::parse("a secret phrase", "ada").unwrap();
        assert!(!format!("{p:?}").contains("secret"));
    }

    #[test]
    fn hashes_are_argon2id_with_the_agreed_parameters_and_verify() {
        let phc = hash_blocking("a secret phrase").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_blocking("a secret phrase", &phc).unwrap());
        assert!(!verify_blocking("another phrase", &phc).unwrap());
    }
}
