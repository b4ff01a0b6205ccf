//! The routing table (which the OpenAPI document must list exactly), request bodies and the client's
//! idempotency key with the keys derived from it.

use retail_sync_core::idempotency::IdempotencyKey;

use crate::config::*;
use crate::http::*;

/// The API's operations; `method()` and `path()` are the routing table, and the OpenAPI document must
/// list exactly these (a test checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    GetMember,
    GetBalance,
    CreateHold,
    GetHold,
    CommitHold,
    ReleaseHold,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Self::GetMember,
        Self::GetBalance,
        Self::CreateHold,
        Self::GetHold,
        Self::CommitHold,
        Self::ReleaseHold,
    ];

    pub fn method(self) -> &'static str {
        match self {
            Self::GetMember | Self::GetBalance | Self::GetHold => "GET",
            Self::CreateHold | Self::CommitHold | Self::ReleaseHold => "POST",
        }
    }

    /// The path template; `{name}` is one path segment.
    pub fn path(self) -> &'static str {
        match self {
            Self::GetMember => "/v1/members/{member_id}",
            Self::GetBalance => "/v1/members/{member_id}/balance",
            Self::CreateHold => "/v1/holds",
            Self::GetHold => "/v1/holds/{hold_id}",
            Self::CommitHold => "/v1/holds/{hold_id}/commit",
            Self::ReleaseHold => "/v1/holds/{hold_id}/release",
        }
    }

    /// The OpenAPI `operationId`.
    pub fn operation_id(self) -> &'static str {
        match self {
            Self::GetMember => "getMember",
            Self::GetBalance => "getBalance",
            Self::CreateHold => "createHold",
            Self::GetHold => "getHold",
            Self::CommitHold => "commitHold",
            Self::ReleaseHold => "releaseHold",
        }
    }

    /// The scope a caller needs for this operation.
    pub fn scope(self) -> &'static str {
        match self {
            // A member's own account, read as their balance is: the same scope and the same member rule.
            Self::GetMember | Self::GetBalance => SCOPE_BALANCE_READ,
            Self::GetHold => SCOPE_HOLDS_READ,
            Self::CreateHold | Self::CommitHold | Self::ReleaseHold => SCOPE_HOLDS_WRITE,
        }
    }

    /// The suffix of the key the loyalty platform receives for a mutating call.
    fn loyalty_step(self) -> &'static str {
        match self {
            Self::CreateHold => "create-hold",
            Self::CommitHold => "commit-hold",
            Self::ReleaseHold => "release-hold",
            Self::GetMember | Self::GetBalance | Self::GetHold => "read",
        }
    }

    /// The path parameters if `path` is this operation's path.
    fn matches(self, path: &str) -> Option<Vec<&str>> {
        let mut params = Vec::new();
        let mut template = self.path().split('/');
        let mut actual = path.split('/');
        loop {
            match (template.next(), actual.next()) {
                (None, None) => return Some(params),
                (Some(t), Some(a)) if t.starts_with('{') && !a.is_empty() => params.push(a),
                (Some(t), Some(a)) if t == a => {}
                _ => return None,
            }
        }
    }
}

/// The operation `method` + `path` names, or the 404/405 answer.
pub(crate) fn route<'p>(method: &str, path: &'p str) -> Result<(Operation, Vec<&'p str>), ApiResponse> {
    let mut allowed = Vec::new();
    for op in Operation::ALL {
        if let Some(params) = op.matches(path) {
            if op.method() == method {
                return Ok((op, params));
            }
            allowed.push(op.method());
        }
    }
    if allowed.is_empty() {
        Err(ApiResponse::error(
            404,
            ErrorCode::NotFound,
            format!("no route {method} {path}"),
        ))
    } else {
        Err(ApiResponse::error(
            405,
            ErrorCode::MethodNotAllowed,
            format!("{path} does not accept {method}"),
        )
        .with_header("allow", allowed.join(", ")))
    }
}

/// The client's `Idempotency-Key` (1–200 characters of `[A-Za-z0-9._:-]`), scoped by the caller
/// ([`Caller::key_scope`](crate::http::Caller::key_scope): the client id, and the member of a member's
/// token): two callers sending the same key make two requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey {
    client: String,
    key: String,
}

impl ClientKey {
    /// `key` as the caller whose scope is `client` sent it; `None` for a key outside the rules. `client`
    /// holds no ':' (see [`Caller::client_is_valid`](crate::http::Caller::client_is_valid)).
    pub fn parse(client: &str, key: &str) -> Option<Self> {
        let ok = (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        ok.then(|| Self {
            client: client.to_owned(),
            key: key.to_owned(),
        })
    }

    /// `{client}:{key}`: the client id holds no ':', so two (client, key) pairs never meet.
    pub fn as_str(&self) -> String {
        format!("{}:{}", self.client, self.key)
    }

    /// Where the API keeps the answer: `api:{client}:{key}`. The `api` namespace holds no ':' of its
    /// own, so it cannot meet the steps' keys (`receipt:…`, `order:…`) nor the pinned hold requests
    /// (`api-hold:…`).
    pub fn store_key(&self) -> IdempotencyKey {
        IdempotencyKey::for_step("api", &self.as_str())
    }

    /// Where the first attempt's hold request is pinned (see [`RedemptionApi`]).
    pub(crate) fn hold_request_key(&self) -> IdempotencyKey {
        IdempotencyKey::for_step("api-hold", &self.as_str())
    }

    /// What the loyalty platform receives: `api:{client}:{key}:{operation}`. Operations contain no ':',
    /// so two different (client, key, operation) never give the same platform key.
    pub fn loyalty_key(&self, operation: Operation) -> IdempotencyKey {
        IdempotencyKey::for_step(&format!("api:{}", self.as_str()), operation.loyalty_step())
    }
}

/// Where the API records who created a hold (`api-owner:{hold_id}`): only that caller may read, commit
/// or release it.
pub(crate) fn owner_key(hold_id: &str) -> IdempotencyKey {
    IdempotencyKey::for_step("api-owner", hold_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_whole_segments_only() {
        assert_eq!(
            route("GET", "/v1/members/m-1/balance").unwrap(),
            (Operation::GetBalance, vec!["m-1"])
        );
        assert_eq!(
            route("POST", "/v1/holds/h-1/commit").unwrap(),
            (Operation::CommitHold, vec!["h-1"])
        );
        assert_eq!(route("GET", "/v1/holds/").unwrap_err().status, 404);
        assert_eq!(route("GET", "/v1/holds/h-1/commit/x").unwrap_err().status, 404);
        let not_allowed = route("DELETE", "/v1/holds/h-1").unwrap_err();
        assert_eq!(not_allowed.status, 405);
        assert_eq!(not_allowed.header("Allow"), Some("GET"));
    }

    #[test]
    fn client_keys_are_bounded_and_namespaced() {
        assert!(ClientKey::parse("web", "").is_none());
        assert!(ClientKey::parse("web", "a b").is_none());
        assert!(ClientKey::parse("web", &"k".repeat(201)).is_none());
        let key = ClientKey::parse("web", "pos-1:basket.42_x").unwrap();
        assert_eq!(key.store_key().as_str(), "api:web:pos-1:basket.42_x");
        assert_eq!(
            key.loyalty_key(Operation::CreateHold).as_str(),
            "api:web:pos-1:basket.42_x:create-hold"
        );
        assert_ne!(
            ClientKey::parse("app", "k").unwrap().store_key(),
            ClientKey::parse("web", "k").unwrap().store_key()
        );
    }
}
