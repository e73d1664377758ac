//! The authenticated user id a connection acts as.
//!
//! Ids follow the tenant rules of `warren_runtime::tenant` (the only place a
//! user-supplied name becomes a path), so an id that logs in here is one the
//! sandbox backend accepts.

use std::fmt;

use warren_runtime::tenant::{Tenant, TenantError};

/// A validated user id, as given (not the derived slug).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    pub fn parse(id: &str) -> Result<UserId, TenantError> {
        Tenant::parse(id).map(|t| UserId(t.id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_tenant_ids_and_refuses_the_rest() {
        assert_eq!(UserId::parse("alice").unwrap().as_str(), "alice");
        assert!(UserId::parse("Alice@Example.com").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("../etc").is_err());
        assert!(UserId::parse("root").is_err());
        assert!(UserId::parse("a\0b").is_err());
    }
}
