//! The loyalty port over HTTP (contract: `openapi/loyalty.yaml`), and the platform's ledger read back
//! for reconciliation.

use async_trait::async_trait;
use jiff::Timestamp;

use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::{ExternalRef, HoldId, MemberId, Points};
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{
    Accrual, AccrualRequest, Adjustment, AdjustmentRequest, Balance, BookedPoints, CommitRequest,
    Confirmation, Hold, HoldRequest, Loyalty, LoyaltyBooks, LoyaltyMembers, MemberSnapshot, MemberSync,
};

use crate::api::{Auth, JsonApi, with_window};
use crate::config::HttpConfig;
use crate::error::ConnectorError;

/// Cheap to clone: clones share one connection pool. Build it once per process.
#[derive(Clone)]
pub struct HttpLoyalty {
    api: JsonApi,
}

impl HttpLoyalty {
    pub fn new(config: &HttpConfig, auth: Auth) -> Result<Self, ConnectorError> {
        Ok(Self {
            api: JsonApi::new(config, auth, "loyalty", ReasonCode::LoyaltyRejected)?,
        })
    }

    /// From `LOYALTY_BASE_URL` and the optional `LOYALTY_*` settings of [`HttpConfig::from_env`], with
    /// the authentication of [`Auth::from_env`] (credentials from the environment).
    pub fn from_env() -> Result<Self, ConnectorError> {
        Self::new(&HttpConfig::from_env("LOYALTY")?, Auth::from_env("LOYALTY")?)
    }

    /// Tokens fetched from the token endpoint so far by this connector and its clones.
    pub fn tokens_fetched(&self) -> u64 {
        self.api.tokens_fetched()
    }
}

#[async_trait]
impl Loyalty for HttpLoyalty {
    /// The platform not knowing the member (`member_not_found`) is `MemberNotEnrolled`, which the
    /// enrolment rule acts on (see `members::StepLoyalty`); a merged member (`member_merged`) is
    /// `MergeRefused`, and earns nothing until the caller uses the survivor. So are the same codes on
    /// every other call (see `api::reason_of_code`).
    async fn accrue(&self, request: &AccrualRequest, key: &IdempotencyKey) -> Result<Accrual, Error> {
        self.api.post("/loyalty/v1/accruals", request, key).await
    }

    // Member and hold ids are validated identifiers (`[A-Za-z0-9][A-Za-z0-9._-]*`): safe as path segments
    // as they are, and never `.` or `..`.

    async fn balance(&self, member_id: &MemberId) -> Result<Balance, Error> {
        self.api
            .get(&format!("/loyalty/v1/members/{member_id}/balance"))
            .await
    }

    async fn create_hold(&self, request: &HoldRequest, key: &IdempotencyKey) -> Result<Hold, Error> {
        self.api.post("/loyalty/v1/holds", request, key).await
    }

    async fn get_hold(&self, hold_id: &HoldId) -> Result<Hold, Error> {
        self.api.get(&format!("/loyalty/v1/holds/{hold_id}")).await
    }

    /// The platform's verdicts on a commit (unknown hold, expired, released, committed elsewhere, other
    /// points, a reused key) are `RedemptionRefused`: the order workflow fails the order on those, and
    /// only those, without booking anything. A 400 says our request was malformed, not the redemption.
    async fn commit_hold(
        &self,
        hold_id: &HoldId,
        request: &CommitRequest,
        key: &IdempotencyKey,
    ) -> Result<Hold, Error> {
        let path = format!("/loyalty/v1/holds/{hold_id}/commit");
        self.api
            .post_refused_as(&path, request, key, |status| match status {
                404 | 409 | 422 => ReasonCode::RedemptionRefused,
                _ => ReasonCode::LoyaltyRejected,
            })
            .await
    }

    async fn release_hold(&self, hold_id: &HoldId, key: &IdempotencyKey) -> Result<Hold, Error> {
        let path = format!("/loyalty/v1/holds/{hold_id}/release");
        self.api.post(&path, &serde_json::json!({}), key).await
    }

    async fn adjust(&self, request: &AdjustmentRequest, key: &IdempotencyKey) -> Result<Adjustment, Error> {
        self.api.post("/loyalty/v1/adjustments", request, key).await
    }

    /// `POST /loyalty/v1/accruals/{id}/confirm` with an empty object, retried under the key like every
    /// mutating call. An unknown accrual (404 `transaction_not_found`) and one never pending (409
    /// `not_pending`) are `LoyaltyRejected`, the code first in the message.
    async fn confirm_accrual(
        &self,
        loyalty_transaction_id: &ExternalRef,
        key: &IdempotencyKey,
    ) -> Result<Confirmation, Error> {
        // A validated identifier, like member and hold ids: safe as a path segment as it is.
        let path = format!("/loyalty/v1/accruals/{loyalty_transaction_id}/confirm");
        self.api.post(&path, &serde_json::json!({}), key).await
    }
}

#[derive(serde::Serialize)]
struct Enrolment<'a> {
    member_id: &'a MemberId,
}

#[derive(serde::Serialize)]
struct MergeInto<'a> {
    survivor_id: &'a MemberId,
}

#[derive(serde::Deserialize)]
struct Merged {
    points_moved: Points,
}

#[async_trait]
impl MemberSync for HttpLoyalty {
    async fn sync_member(&self, snapshot: &MemberSnapshot, key: &IdempotencyKey) -> Result<(), Error> {
        let path = format!("/loyalty/v1/members/{}/profile", snapshot.member_id);
        let _: serde_json::Value = self.api.put(&path, snapshot, key).await?;
        Ok(())
    }
}

#[async_trait]
impl LoyaltyMembers for HttpLoyalty {
    /// `enrolment_refused` (422: no card was issued with the number) is `MemberNotEnrolled`.
    async fn enrol(&self, member_id: &MemberId, key: &IdempotencyKey) -> Result<(), Error> {
        let _: serde_json::Value = self
            .api
            .post("/loyalty/v1/members", &Enrolment { member_id }, key)
            .await?;
        Ok(())
    }

    /// A refusal of a merge is `MergeRefused`, but for a member the platform does not know
    /// (`member_not_found`: `MemberNotEnrolled`, which the merge waits on), as the port has it.
    async fn merge(
        &self,
        duplicate: &MemberId,
        survivor: &MemberId,
        key: &IdempotencyKey,
    ) -> Result<Points, Error> {
        let path = format!("/loyalty/v1/members/{duplicate}/merge");
        let merged: Merged = self
            .api
            .post_refused_as(
                &path,
                &MergeInto {
                    survivor_id: survivor,
                },
                key,
                |_| ReasonCode::MergeRefused,
            )
            .await?;
        Ok(merged.points_moved)
    }
}

/// The answer of `GET /loyalty/v1/transactions`.
#[derive(serde::Deserialize)]
struct MovementList {
    movements: Vec<BookedPoints>,
}

/// The platform's ledger over `GET /loyalty/v1/transactions`, retried and authenticated like every
/// other call. A window the platform refuses (empty or inverted: `invalid_window`) is `Rejected`; a
/// platform that does not answer usefully, `Unavailable`.
#[async_trait]
impl LoyaltyBooks for HttpLoyalty {
    async fn movements(&self, from: Timestamp, until: Timestamp) -> Result<Vec<BookedPoints>, Error> {
        let list: MovementList = self
            .api
            .get(&with_window("/loyalty/v1/transactions", from, until))
            .await?;
        Ok(list.movements)
    }
}
