//! Usernames: parsed once, valid from then on.

/// A username as Django allows them: 1–150 characters, letters, digits and `@ . + - _`.
/// Compared without regard to case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub const MAX_LEN: usize = 150;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("Enter a username.".into());
        }
        if name.chars().count() > Self::MAX_LEN {
            return Err(format!(
                "Use at most {} characters for the username.",
                Self::MAX_LEN
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_alphanumeric() || matches!(c, '@' | '.' | '+' | '-' | '_')))
        {
            return Err(format!(
                "Usernames may contain letters, digits and @ . + - _ only, not {bad:?}."
            ));
        }
        Ok(Username(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::Username;

    #[test]
    fn ordinary_names_are_accepted_and_trimmed() {
        assert_eq!(Username::parse(" ada ").unwrap().as_str(), "ada");
        assert!(Username::parse("ada.lovelace+ml@example.org").is_ok());
        assert!(Username::parse("zoë_1815").is_ok());
    }

    #[test]
    fn empty_long_and_odd_names_are_refused() {
        assert!(Username::parse("").is_err());
        assert!(Username::parse("   ").is_err());
        assert!(Username::parse(&"a".repeat(151)).is_err());
        assert!(Username::parse(&"a".repeat(150)).is_ok());
        assert!(Username::parse("ada lovelace").is_err());
        assert!(Username::parse("<script>").is_err());
    }
}
