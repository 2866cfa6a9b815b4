//! Who is asking: passwords, usernames, server-side sessions, CSRF, login throttling and the
//! extractors that require a signed-in user or staff.

pub mod bearer;
pub mod context;
pub mod csrf;
pub mod password;
pub mod session_store;
pub mod throttle;
pub mod tokens;

pub use bearer::{ApiStaff, ApiUser, InferenceCaller};
pub use context::{Flash, LoggedIn, PageCtx, StaffOnly};
pub use csrf::CsrfForm;
pub use password::Password;

/// The session key holding the signed-in user's id.
pub const SESSION_USER_ID: &str = "user_id";
/// The session key holding when the user logged in (unix seconds); a renewed session keeps it.
pub const SESSION_AUTHENTICATED_AT: &str = "authenticated_at";
