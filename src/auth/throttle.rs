//! Login throttling per account and per client address.
//!
//! The first few failures cost nothing; after that each further attempt must wait an
//! exponentially growing delay (1 s, 2 s, 4 s, … capped at 5 minutes) after the last failure, and
//! an account never sees more than [`ACCOUNT_HOURLY_CAP`] failures an hour. A success clears the
//! account's record.

use sqlx::PgPool;

use crate::db::login_failures::{self, FailureWindow};

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

pub async fn check(pool: &PgPool, username: &str, client_ip: &str) -> sqlx::Result<Verdict> {
    let account = login_failures::for_username(pool, username).await?;
    let client = login_failures::for_client(pool, client_ip).await?;
    Ok(decide(&account, &client))
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
