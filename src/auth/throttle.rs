//! Login throttling per account and per client address.
//!
//! The first few failures cost nothing; after that each further attempt must wait an
//! exponentially growing delay (1 s, 2 s, 4 s, … capped at 5 minutes) after the last failure, and
//! an account never sees more than [`ACCOUNT_HOURLY_CAP`] failures an hour. A success clears the
//! account's record.

use sqlx::PgPool;

use plinth_store::login_failures::{self, FailureWindow};

/// Failures allowed for one account before delays begin.
pub const ACCOUNT_FREE_FAILURES: i64 = 5;
/// Failures allowed from one address (over all accounts) before delays begin.
pub const CLIENT_FREE_FAILURES: i64 = 20;
/// Hard ceiling of failures per account and hour.
pub const ACCOUNT_HOURLY_CAP: i64 = 100;
const MAX_DELAY_SECS: f64 = 300.0;

/// Whether a login attempt may be checked now.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Allow,
    /// Refused; the client may try again after this many seconds.
    Wait(u64),
}

/// How long after the last failure the next attempt must wait, given the failures of the hour.
fn wait_secs(window: &FailureWindow, free: i64, cap: i64) -> f64 {
    if window.count >= cap {
        return window.oldest_expires_in.unwrap_or(MAX_DELAY_SECS).max(1.0);
    }
    if window.count < free {
        return 0.0;
    }
    let exponent = (window.count - free).min(16) as i32;
    let delay = 2f64.powi(exponent).min(MAX_DELAY_SECS);
    delay - window.since_last.unwrap_or(0.0)
}

/// Decides from the recorded failures of the account and the client.
pub fn decide(account: &FailureWindow, client: &FailureWindow) -> Verdict {
    let wait = wait_secs(account, ACCOUNT_FREE_FAILURES, ACCOUNT_HOURLY_CAP).max(wait_secs(
        client,
        CLIENT_FREE_FAILURES,
        i64::MAX,
    ));
    if wait > 0.0 {
        Verdict::Wait(wait.ceil() as u64)
    } else {
        Verdict::Allow
    }
}

/// A password check that has been let through the throttle. It is recorded as a failure
/// *before* the password is verified, so a burst of parallel guesses see each other and only the
/// free ones get through; [`Attempt::succeeded`] takes the record back.
#[must_use]
pub struct Attempt {
    id: i64,
}

/// Records an attempt on `username` from `client_ip` and decides whether it may go ahead,
/// counting every attempt recorded before it (finished or still running).
pub async fn begin(
    pool: &PgPool,
    username: &str,
    client_ip: &str,
) -> sqlx::Result<Result<Attempt, u64>> {
    // No account name starts with `#`; the throttle's own keys (sign-ups) do.
    let username = if username.trim_start().starts_with('#') {
        "#not-a-username"
    } else {
        username
    };
    let id = login_failures::record(pool, username, client_ip).await?;
    let account = login_failures::for_username(pool, username, Some(id)).await?;
    let client = login_failures::for_client(pool, client_ip, Some(id)).await?;
    match decide(&account, &client) {
        Verdict::Allow => Ok(Ok(Attempt { id })),
        Verdict::Wait(secs) => {
            // Not tried: it does not count.
            login_failures::delete(pool, id).await?;
            Ok(Err(secs))
        }
    }
}

impl Attempt {
    /// The password was right: the attempt is taken back and the account's failures forgiven.
    pub async fn succeeded(self, pool: &PgPool, username: &str) -> sqlx::Result<()> {
        login_failures::delete(pool, self.id).await?;
        login_failures::clear_username(pool, username).await
    }

    /// The password was wrong: the recorded failure stays.
    pub fn failed(self) {}
}

/// Sign-ups from one address: a few an hour are free, then each waits longer. Every sign-up
/// counts, successful or not. `Err(seconds)` when this one must wait.
pub async fn begin_signup(pool: &PgPool, client_ip: &str) -> sqlx::Result<Result<(), u64>> {
    let key = format!("#signup:{client_ip}");
    let id = login_failures::record(pool, &key, client_ip).await?;
    let from_here = login_failures::for_username(pool, &key, Some(id)).await?;
    match decide(&from_here, &FailureWindow::default()) {
        Verdict::Allow => Ok(Ok(())),
        Verdict::Wait(secs) => {
            login_failures::delete(pool, id).await?;
            Ok(Err(secs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(count: i64, since_last: f64) -> FailureWindow {
        FailureWindow {
            count,
            since_last: Some(since_last),
            oldest_expires_in: Some(1800.0),
        }
    }

    #[test]
    fn a_few_failures_are_free() {
        assert_eq!(decide(&window(4, 0.0), &window(4, 0.0)), Verdict::Allow);
    }

    #[test]
    fn delays_grow_after_the_free_failures_and_lift() {
        assert_eq!(decide(&window(5, 0.0), &window(5, 0.0)), Verdict::Wait(1));
        assert_eq!(decide(&window(5, 1.5), &window(5, 1.5)), Verdict::Allow);
        assert_eq!(decide(&window(8, 0.0), &window(8, 0.0)), Verdict::Wait(8));
        assert_eq!(
            decide(&window(30, 0.0), &window(0, 0.0)),
            Verdict::Wait(300)
        );
    }

    #[test]
    fn one_address_guessing_many_accounts_is_slowed() {
        assert_eq!(decide(&window(0, 0.0), &window(22, 0.0)), Verdict::Wait(4));
    }

    #[test]
    fn the_hourly_cap_holds_until_the_window_moves() {
        assert_eq!(
            decide(&window(100, 900.0), &window(0, 0.0)),
            Verdict::Wait(1800)
        );
    }

    #[test]
    fn no_more_than_the_cap_can_fail_in_an_hour() {
        // Simulate an attacker retrying the moment each delay lifts.
        let (mut t, mut failures) = (0.0f64, 0i64);
        let mut last = f64::NEG_INFINITY;
        while t < 3600.0 {
            let w = window(failures, t - last);
            match decide(&w, &FailureWindow::default()) {
                Verdict::Allow => {
                    failures += 1;
                    last = t;
                }
                Verdict::Wait(s) => t += s as f64,
            }
        }
        assert!(failures <= ACCOUNT_HOURLY_CAP, "{failures}");
    }
}
