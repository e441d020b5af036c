//! Secrets and the API credentials: read only from the environment (argv is visible to every user
//! of the machine), and never printed.

use std::fmt;

use super::ConfigError;

/// Environment variable holding the API username.
pub const USERNAME_VAR: &str = "VERIGATOR_USERNAME";
/// Environment variable holding the API password.
pub const PASSWORD_VAR: &str = "VERIGATOR_PASSWORD";

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The API credentials, sent as `X-Service-Auth: <username>:<password>`.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The Messente API username.
    pub username: String,
    /// The Messente API password.
    pub password: Secret,
}

impl Credentials {
    /// Reads the credentials from the environment (never from flags: argv is visible to every user).
    pub fn from_env() -> Result<Self, ConfigError> {
        let read = |name: &'static str| match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) | Err(std::env::VarError::NotPresent) => Err(ConfigError::MissingEnv(name)),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::NotUnicodeEnv(name)),
        };
        let username = read(USERNAME_VAR)?;
        if username.contains(':') {
            return Err(ConfigError::ColonInUsername);
        }
        Ok(Credentials {
            username,
            password: Secret::new(read(PASSWORD_VAR)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let c = Credentials {
            username: "u".into(),
            password: s,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
