//! The service: routing, validation, idempotency by the client's key, the loyalty call under the
//! deployment's timeout and outage policy.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use retail_sync_contracts::values::{HoldId, MemberId};

use retail_sync_core::Error;
use retail_sync_core::idempotency::{
    Claim, Fingerprint, IdempotencyPolicy, IdempotencyRecord, RecordState, decide,
};
use retail_sync_core::ports::{Clock, CommitRequest, HoldRequest, IdempotencyStore, Loyalty, SagaStore};

use crate::config::*;
use crate::http::*;
use crate::routes::*;

/// What is stored against a client key: the answer, byte for byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredResponse {
    status: u16,
    body: String,
}

/// The pinned part of a hold request (see [`RedemptionApi`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PinnedHold {
    expires_at: Timestamp,
}

/// What a validated POST will do.
enum Command {
    Create(CreateHoldBody),
    Commit(HoldId, CommitRequest),
    Release(HoldId),
}

/// Which dependency failed, for the 503's code.
#[derive(Clone, Copy)]
enum Dependency {
    Loyalty,
    State,
}

/// The redemption API over the loyalty port and our idempotency store.
///
/// A hold request carries `expires_at = now + ttl`. If the platform acted on a call that then timed out,
/// the client's retry must send the platform the same body under the same key, or the platform would
/// see its key reused for a different request. So the first attempt pins `expires_at` under
/// `api-hold:{key}` before calling, and every retry under that key sends the pinned instant.
pub struct RedemptionApi {
    pub loyalty: Arc<dyn Loyalty>,
    /// Where members' records are (their consent and account status, for `GET /v1/members/{id}`).
    pub members: Arc<dyn SagaStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub clock: Arc<dyn Clock>,
    pub policy: IdempotencyPolicy,
    pub config: RedemptionConfig,
}

impl RedemptionApi {
    pub async fn handle(&self, request: ApiRequest) -> ApiResponse {
        let response = match self.dispatch(&request).await {
            Ok(r) | Err(r) => r,
        };
        tracing::info!(
            method = %request.method,
            status = response.status,
            "redemption api"
        );
        response
    }

    async fn dispatch(&self, request: &ApiRequest) -> Result<ApiResponse, ApiResponse> {
        let path = request
            .path
            .split_once('?')
            .map_or(request.path.as_str(), |(p, _)| p);
        let (op, params) = route(&request.method, path)?;
        let caller = authorize(request, op)?;
        match op {
            Operation::GetMember => {
                let member_id = id_param(params[0], MemberId::parse)?;
                own_member(caller, &member_id)?;
                self.member(&member_id).await
            }
            Operation::GetBalance => {
                let member_id = id_param(params[0], MemberId::parse)?;
                own_member(caller, &member_id)?;
                let balance = self.loyalty_call(self.loyalty.balance(&member_id)).await;
                Ok(self.answer(200, balance))
            }
            Operation::GetHold => {
                let hold_id = id_param(params[0], HoldId::parse)?;
                self.owns_hold(caller, &hold_id).await?;
                let hold = self.loyalty_call(self.loyalty.get_hold(&hold_id)).await;
                Ok(self.answer(200, hold))
            }
            Operation::CreateHold | Operation::CommitHold | Operation::ReleaseHold => {
                let key = request
                    .header("idempotency-key")
                    .and_then(|k| ClientKey::parse(&caller.key_scope(), k))
                    .ok_or_else(|| {
                        ApiResponse::error(
                            400,
                            ErrorCode::IdempotencyKeyRequired,
                            format!(
                                "every POST needs an Idempotency-Key header of 1 to \
                                 {MAX_IDEMPOTENCY_KEY_LEN} characters from [A-Za-z0-9._:-]"
                            ),
                        )
                    })?;
                let body = json_body(request, op != Operation::ReleaseHold)?;
                let command = match op {
                    Operation::CreateHold => {
                        let create = self.create_body(&body)?;
                        own_member(caller, &create.member_id)?;
                        Command::Create(create)
                    }
                    Operation::CommitHold => {
                        let hold_id = id_param(params[0], HoldId::parse)?;
                        let commit = typed_body::<CommitRequest>(&body)?;
                        self.owns_hold(caller, &hold_id).await?;
                        Command::Commit(hold_id, commit)
                    }
                    _ => {
                        let hold_id = id_param(params[0], HoldId::parse)?;
                        self.owns_hold(caller, &hold_id).await?;
                        Command::Release(hold_id)
                    }
                };
                // The fingerprint is of the parsed body, so whitespace and key order do not make a
                // retry look like a different request.
                let fingerprint = Fingerprint::of(&(op.method(), path, &body));
                Ok(self.once(op, caller, &key, fingerprint, command).await)
            }
        }
    }

    /// A member's account: status, tier and consent from retail-sync's record, points from the loyalty
    /// platform. 404 when neither knows the member; personal data is never in the answer.
    async fn member(&self, member_id: &MemberId) -> Result<ApiResponse, ApiResponse> {
        let record = match retail_sync_core::members::load_record(&*self.members, member_id).await {
            Ok(record) => record,
            Err(e) => return Err(self.failure(e, Dependency::State)),
        };
        let balance = match self.loyalty_call(self.loyalty.balance(member_id)).await {
            Ok(b) => Some(b),
            // The platform does not know the member: not enrolled (yet), or merged away.
            Err(Error::Rejected { .. }) => None,
            Err(e) => return Err(self.failure(e, Dependency::Loyalty)),
        };
        if record.is_none() && balance.is_none() {
            return Err(ApiResponse::error(
                404,
                ErrorCode::NotFound,
                format!("no member {member_id}"),
            ));
        }
        let snapshot = record.as_ref().map(|r| r.snapshot());
        let status = snapshot.as_ref().map_or("active", |s| s.status.as_str());
        Ok(ApiResponse::json(
            200,
            &serde_json::json!({
                "member_id": member_id,
                "status": status,
                "enrolled": balance.is_some(),
                "tier": snapshot.as_ref().and_then(|s| s.tier.clone()),
                "home_store_id": snapshot.as_ref().and_then(|s| s.home_store_id.clone()),
                "marketing_consent": snapshot.as_ref().is_some_and(|s| s.marketing_consent),
                "merged_into": snapshot.as_ref().and_then(|s| s.merged_into.clone()),
                "balance": balance.as_ref().map(|b| b.balance),
                "available": balance.as_ref().map(|b| b.available),
                "pending": balance.as_ref().map(|b| b.pending),
            }),
        ))
    }

    fn create_body(&self, body: &Value) -> Result<CreateHoldBody, ApiResponse> {
        let create: CreateHoldBody = typed_body(body)?;
        if let Some(ttl) = create.ttl_seconds
            && !(1..=MAX_HOLD_TTL_SECONDS).contains(&ttl)
        {
            return Err(ApiResponse::error(
                422,
                ErrorCode::InvalidRequest,
                format!("ttl_seconds must be 1 to {MAX_HOLD_TTL_SECONDS}, not {ttl}"),
            ));
        }
        Ok(create)
    }

    /// Runs a mutating command at most once per client key and answers as the first run did.
    async fn once(
        &self,
        op: Operation,
        caller: &Caller,
        key: &ClientKey,
        fingerprint: Fingerprint,
        command: Command,
    ) -> ApiResponse {
        let now = self.clock.now();
        let claim = self.policy.in_progress(key.store_key(), fingerprint, now);
        let existing = match self.idempotency.try_insert(&claim, now).await {
            Ok(existing) => existing,
            Err(e) => return self.failure(e, Dependency::State),
        };
        if let Some(existing) = existing {
            return match decide(&existing, &claim.fingerprint, now) {
                Claim::AlreadyDone(stored) => replay(key, stored),
                Claim::InProgress { retry_after } => ApiResponse::error(
                    409,
                    ErrorCode::RequestInProgress,
                    "a request with this Idempotency-Key is still being answered; retry later",
                )
                .with_header("retry-after", retry_after.as_secs().max(1).to_string()),
                Claim::KeyReused => ApiResponse::error(
                    422,
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was first used for a different request",
                ),
                // `decide` does not answer Proceed for a live record; treat it as the conflict it
                // would be rather than act twice.
                Claim::Proceed => ApiResponse::error(
                    409,
                    ErrorCode::RequestInProgress,
                    "a request with this Idempotency-Key is still being answered; retry later",
                )
                .with_header("retry-after", "1"),
            };
        }

        let response = self.execute(op, caller, key, &claim, command, now).await;
        if response.status < 500 {
            self.complete(&claim, &response, now).await;
        } else if let Err(e) = self.idempotency.release(&claim).await {
            // The claim lapses at the end of its lease anyway; until then a retry gets a 409.
            tracing::warn!(error = %retail_sync_core::error::describe(&e), key = %claim.key, "could not release the claim");
        }
        response
    }

    async fn execute(
        &self,
        op: Operation,
        caller: &Caller,
        key: &ClientKey,
        claim: &IdempotencyRecord,
        command: Command,
        now: Timestamp,
    ) -> ApiResponse {
        let loyalty_key = key.loyalty_key(op);
        match command {
            Command::Create(body) => {
                let ttl = body.ttl_seconds.unwrap_or(self.config.hold_ttl_seconds);
                let fresh = now + Duration::from_secs(ttl);
                let expires_at = match self.pinned_expiry(key, claim, fresh, now).await {
                    Ok(t) => t,
                    Err(e) => return self.failure(e, Dependency::State),
                };
                let request = HoldRequest {
                    member_id: body.member_id,
                    points: body.points,
                    currency: body.currency,
                    basket_net_minor: body.basket_net_minor,
                    expires_at,
                };
                let hold = self
                    .loyalty_call(self.loyalty.create_hold(&request, &loyalty_key))
                    .await;
                if let Ok(hold) = &hold
                    && let Err(e) = self.record_owner(caller, &hold.hold_id, now).await
                {
                    return self.failure(e, Dependency::State);
                }
                self.answer(201, hold)
            }
            Command::Commit(hold_id, request) => {
                let hold = self
                    .loyalty_call(self.loyalty.commit_hold(&hold_id, &request, &loyalty_key))
                    .await;
                self.answer(200, hold)
            }
            Command::Release(hold_id) => {
                let hold = self
                    .loyalty_call(self.loyalty.release_hold(&hold_id, &loyalty_key))
                    .await;
                self.answer(200, hold)
            }
        }
    }

    /// Records `caller` as the creator of `hold_id` (a repeat finds the record there already).
    async fn record_owner(&self, caller: &Caller, hold_id: &HoldId, now: Timestamp) -> Result<(), Error> {
        let owner = Owner {
            client: caller.client.clone(),
            member: caller.member.clone(),
        };
        let claim = self
            .policy
            .in_progress(owner_key(hold_id.as_str()), Fingerprint::of(&owner), now);
        let record = self.policy.completed(
            &claim,
            serde_json::to_value(&owner).expect("owners serialize"),
            now,
        );
        self.idempotency.try_insert(&record, now).await.map(drop)
    }

    /// Only the caller that created a hold (through this API) may read, commit or release it; a
    /// member's token, only its own member's.
    async fn owns_hold(&self, caller: &Caller, hold_id: &HoldId) -> Result<(), ApiResponse> {
        let record = self
            .idempotency
            .get(&owner_key(hold_id.as_str()))
            .await
            .map_err(|e| self.failure(e, Dependency::State))?;
        let owner = record.and_then(|r| match r.state {
            RecordState::Completed { result } => serde_json::from_value::<Owner>(result).ok(),
            RecordState::InProgress { .. } => None,
        });
        match owner {
            Some(o)
                if o.client == caller.client && (caller.member.is_none() || caller.member == o.member) =>
            {
                Ok(())
            }
            _ => Err(ApiResponse::error(
                403,
                ErrorCode::Forbidden,
                format!("hold {hold_id} was not created by this caller"),
            )),
        }
    }

    /// The `expires_at` the first attempt under this key chose (`fresh` if this is the first).
    async fn pinned_expiry(
        &self,
        key: &ClientKey,
        claim: &IdempotencyRecord,
        fresh: Timestamp,
        now: Timestamp,
    ) -> Result<Timestamp, Error> {
        let pin = self.policy.completed(
            &self
                .policy
                .in_progress(key.hold_request_key(), claim.fingerprint.clone(), now),
            serde_json::to_value(PinnedHold { expires_at: fresh }).expect("pins serialize"),
            now,
        );
        Ok(match self.idempotency.try_insert(&pin, now).await? {
            None => fresh,
            Some(IdempotencyRecord {
                fingerprint,
                state: RecordState::Completed { result },
                ..
            }) if fingerprint == claim.fingerprint => serde_json::from_value::<PinnedHold>(result)
                .map(|p| p.expires_at)
                .unwrap_or(fresh),
            // Cannot happen while the answer record guards the key (same retention); should it, the
            // platform will judge the request on its own.
            Some(_) => fresh,
        })
    }

    /// Replaces our in-progress claim by the answer, in one conditional write: the insert's condition
    /// is evaluated at the end of our lease, when our own claim no longer blocks, while a record taken
    /// by someone else (only possible after our lease lapsed, so with a later lease) or a completed one
    /// still does.
    async fn complete(&self, claim: &IdempotencyRecord, response: &ApiResponse, now: Timestamp) {
        let RecordState::InProgress { lease_until } = claim.state else {
            return;
        };
        let stored = StoredResponse {
            status: response.status,
            body: response.body.clone(),
        };
        let record = self.policy.completed(
            claim,
            serde_json::to_value(stored).expect("responses serialize"),
            now,
        );
        match self.idempotency.try_insert(&record, lease_until).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                tracing::warn!(key = %claim.key, "the key was taken over before the answer was stored")
            }
            // The answer still goes out; a repeat finds the claim (409) until its lease lapses, then
            // asks the platform again, which answers from its own idempotency record.
            Err(e) => {
                tracing::warn!(error = %retail_sync_core::error::describe(&e), key = %claim.key, "could not store the answer")
            }
        }
    }

    /// A loyalty call, bounded by the configured timeout (which counts as an outage).
    async fn loyalty_call<T>(&self, call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        match tokio::time::timeout(self.config.loyalty_timeout, call).await {
            Ok(result) => result,
            Err(elapsed) => Err(Error::unavailable("loyalty", elapsed)),
        }
    }

    fn answer<T: Serialize>(&self, status: u16, result: Result<T, Error>) -> ApiResponse {
        match result {
            Ok(value) => ApiResponse::json(status, &value),
            Err(e) => self.failure(e, Dependency::Loyalty),
        }
    }

    fn failure(&self, error: Error, dependency: Dependency) -> ApiResponse {
        match error {
            Error::Rejected { reason, message } => {
                let mut body = ErrorBody::new(ErrorCode::RedemptionRefused, message);
                body.reason = Some(reason.as_str().to_owned());
                ApiResponse::json(422, &body)
            }
            Error::BadInput(rejection) => {
                let mut body = ErrorBody::new(ErrorCode::RedemptionRefused, rejection.message);
                body.reason = Some(rejection.reason.as_str().to_owned());
                ApiResponse::json(422, &body)
            }
            e if e.is_retryable() => {
                tracing::warn!(error = %retail_sync_core::error::describe(&e), class = e.class(), "redemption unavailable");
                let policy = self.config.outage_policy;
                let (code, what) = match dependency {
                    Dependency::Loyalty => (ErrorCode::LoyaltyUnavailable, "The loyalty platform is"),
                    Dependency::State => (ErrorCode::ServiceUnavailable, "Redemption is"),
                };
                let message = if policy.sale_allowed() {
                    format!(
                        "{what} not available: complete the sale without redeeming points (the points it \
                         earns are accrued later), or retry with the same Idempotency-Key"
                    )
                } else {
                    format!(
                        "{what} not available and this retailer does not complete sales meanwhile: \
                         retry with the same Idempotency-Key"
                    )
                };
                let mut body = ErrorBody::new(code, message);
                body.sale_allowed = Some(policy.sale_allowed());
                body.policy = Some(policy);
                ApiResponse::json(503, &body)
                    .with_header("retry-after", OUTAGE_RETRY_AFTER_SECONDS.to_string())
            }
            e => {
                tracing::error!(error = %retail_sync_core::error::describe(&e), class = e.class(), "redemption api failed");
                ApiResponse::error(500, ErrorCode::InternalError, "internal error")
            }
        }
    }
}

/// Who created a hold through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Owner {
    client: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    member: Option<String>,
}

/// The caller of `op`: authenticated (401 otherwise), with a client id usable in keys and the route's
/// scope (403 otherwise).
fn authorize(request: &ApiRequest, op: Operation) -> Result<&Caller, ApiResponse> {
    let caller = request
        .caller
        .as_ref()
        .ok_or_else(|| ApiResponse::error(401, ErrorCode::Unauthenticated, "no authenticated caller"))?;
    if !caller.client_is_valid() {
        return Err(ApiResponse::error(
            403,
            ErrorCode::Forbidden,
            "the token's client id is not 1 to 128 characters of [A-Za-z0-9._@|-]",
        ));
    }
    if caller
        .member
        .as_deref()
        .is_some_and(|m| MemberId::parse(m).is_err())
    {
        return Err(ApiResponse::error(
            403,
            ErrorCode::Forbidden,
            "the token's member_id claim is not a member id",
        ));
    }
    if !caller.has_scope(op.scope()) {
        return Err(ApiResponse::error(
            403,
            ErrorCode::Forbidden,
            format!("{} needs the scope {}", op.operation_id(), op.scope()),
        ));
    }
    Ok(caller)
}

/// A member's token acts on its own member only.
fn own_member(caller: &Caller, member_id: &MemberId) -> Result<(), ApiResponse> {
    match &caller.member {
        Some(m) if m != member_id.as_str() => Err(ApiResponse::error(
            403,
            ErrorCode::Forbidden,
            "this token acts for another member",
        )),
        _ => Ok(()),
    }
}

/// The stored first answer, as it was.
fn replay(key: &ClientKey, stored: Value) -> ApiResponse {
    match serde_json::from_value::<StoredResponse>(stored) {
        Ok(s) => ApiResponse::raw(s.status, s.body).with_header("idempotent-replayed", "true"),
        Err(e) => {
            tracing::error!(error = %retail_sync_core::error::describe(&e), key = %key.as_str(), "corrupt stored answer");
            ApiResponse::error(500, ErrorCode::InternalError, "internal error")
        }
    }
}

fn id_param<T>(
    raw: &str,
    parse: impl FnOnce(String) -> Result<T, retail_sync_contracts::values::ValueError>,
) -> Result<T, ApiResponse> {
    parse(raw.to_owned()).map_err(|e| ApiResponse::error(400, ErrorCode::InvalidRequest, e.to_string()))
}

/// The body as JSON; an absent or blank body is `null`, refused where a body is `required`.
fn json_body(request: &ApiRequest, required: bool) -> Result<Value, ApiResponse> {
    let text = request.body.as_deref().unwrap_or("").trim();
    if text.is_empty() {
        return if required {
            Err(ApiResponse::error(
                400,
                ErrorCode::InvalidRequest,
                "a JSON body is required",
            ))
        } else {
            Ok(Value::Null)
        };
    }
    serde_json::from_str(text).map_err(|e| {
        ApiResponse::error(
            400,
            ErrorCode::InvalidRequest,
            format!("the body is not JSON: {e}"),
        )
    })
}

fn typed_body<T: DeserializeOwned>(body: &Value) -> Result<T, ApiResponse> {
    T::deserialize(body).map_err(|e| {
        ApiResponse::error(
            400,
            ErrorCode::InvalidRequest,
            format!("the body does not match the schema: {e}"),
        )
    })
}
