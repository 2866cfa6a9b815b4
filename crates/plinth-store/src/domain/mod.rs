//! Values with rules of their own, parsed once and valid from then on, shared by the layers
//! above (`db`, `auth`, the pages).

pub mod proxies;
pub mod username;

pub use username::Username;
