//! The state ports over DynamoDB: idempotency records, sagas and quarantine, one table each. Every
//! decision that must be atomic (claim a key, create a saga, save over a version together with the
//! step's completion) is one conditional write, so two deliveries racing on one key cannot both win.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use jiff::Timestamp;

use retail_sync_contracts::values::CorrelationId;
use retail_sync_core::Error;
use retail_sync_core::idempotency::{IdempotencyKey, IdempotencyRecord, RecordState};
use retail_sync_core::ports::{IdempotencyStore, QuarantineItem, QuarantineStore, SagaStore};
use retail_sync_core::saga::{Saga, SagaId};

use crate::items::{self, Item, attr};
use crate::settings::AwsSettings;

/// The saga table's index from correlation id to saga (`infra/template.yaml`, KEYS_ONLY).
pub const CORRELATION_INDEX: &str = "by-correlation";

/// `IdempotencyRecord::is_live`, negated: the key is free, or its record is past its retention, or it
/// is an in-progress claim whose lease ran out. Both times compare in exact epoch milliseconds (see
/// `items::epoch_ms_exact`), so this decides exactly as `is_live` does.
const CLAIM_CONDITION: &str =
    "attribute_not_exists(#pk) OR #expires_ms <= :now_ms OR (#state = :in_progress AND #lease <= :now_ms)";

/// How often a claim or create is retried when its condition failed but the blocking item was gone by
/// the time we read it (only on emulators that do not return the item with the failure).
const WRITE_ATTEMPTS: usize = 3;

/// The most keys one `BatchGetItem` may ask for.
const BATCH_GET_LIMIT: usize = 100;

fn unavailable(e: impl crate::error::Cause) -> Error {
    Error::unavailable("dynamodb", e.into_cause())
}

fn conflict(saga: &Saga) -> Error {
    Error::Conflict {
        what: format!("saga {}", saga.id),
    }
}

/// What a conditional PutItem came to.
enum Conditional {
    Written,
    /// The condition failed; the item that made it fail, when the service returned it.
    Blocked(Option<Item>),
}

/// Idempotency, saga and quarantine tables. Cheap to clone (the client is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct DynamoState {
    client: Client,
    idempotency_table: String,
    saga_table: String,
    quarantine_table: String,
    saga_retention: Option<std::time::Duration>,
    quarantine_retention: std::time::Duration,
}

impl DynamoState {
    pub fn new(client: Client, settings: &AwsSettings) -> Self {
        Self {
            client,
            idempotency_table: settings.idempotency_table.clone(),
            saga_table: settings.saga_table.clone(),
            quarantine_table: settings.quarantine_table.clone(),
            saga_retention: settings.saga_retention,
            quarantine_retention: settings.quarantine_retention,
        }
    }

    /// A conditional PutItem that asks for the blocking item back with the failure, saving the read a
    /// caller would otherwise need.
    async fn put_unless(
        &self,
        table: &str,
        item: Item,
        condition: &str,
        names: &[(&str, &str)],
        values: &[(&str, AttributeValue)],
    ) -> Result<Conditional, Error> {
        let mut request = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression(condition)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (placeholder, name) in names {
            request = request.expression_attribute_names(*placeholder, *name);
        }
        for (placeholder, value) in values {
            request = request.expression_attribute_values(*placeholder, value.clone());
        }
        match request.send().await {
            Ok(_) => Ok(Conditional::Written),
            // `into_service_error` keeps transport failures too (as `Unhandled`, with their cause).
            Err(e) => match e.into_service_error() {
                PutItemError::ConditionalCheckFailedException(failed) => {
                    Ok(Conditional::Blocked(failed.item))
                }
                other => Err(unavailable(other)),
            },
        }
    }

    /// A strongly consistent read: a record written a moment ago by another delivery must be seen.
    async fn get_item(&self, table: &str, pk: &str) -> Result<Option<Item>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(items::key(pk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    /// Every item of a table, page by page.
    async fn scan_all(&self, table: &str) -> Result<Vec<Item>, Error> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            all.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(all),
            }
        }
    }

    /// Every saga, by id (for operators and reports; a Scan, so not for hot paths).
    pub async fn scan_sagas(&self) -> Result<Vec<Saga>, Error> {
        let mut sagas = self
            .scan_all(&self.saga_table)
            .await?
            .iter()
            .map(items::saga_of)
            .collect::<Result<Vec<_>, _>>()?;
        sagas.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(sagas)
    }

    fn saga_put(&self, saga: &Saga) -> Result<Put, Error> {
        Put::builder()
            .table_name(&self.saga_table)
            .set_item(Some(items::saga_item(saga, self.saga_retention)))
            .condition_expression("#version = :prev")
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_values(
                ":prev",
                AttributeValue::N(saga.version.saturating_sub(1).to_string()),
            )
            .build()
            .map_err(unavailable)
    }

    async fn save_alone(&self, saga: &Saga) -> Result<(), Error> {
        // The same Put as in the transaction, sent on its own: one definition of the versioned write.
        let put = self.saga_put(saga)?;
        let result = self
            .client
            .put_item()
            .table_name(put.table_name)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_names(put.expression_attribute_names)
            .set_expression_attribute_values(put.expression_attribute_values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err(),
                    PutItemError::ConditionalCheckFailedException(_)
                        | PutItemError::TransactionConflictException(_)
                ) =>
            {
                Err(conflict(saga))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The saga over its version and the completion record, in one transaction: if the saga moved on,
    /// the completion is not written either, so a step is never marked done without its timeline entry.
    async fn save_with(&self, saga: &Saga, completion: &IdempotencyRecord) -> Result<(), Error> {
        let saga_put = self.saga_put(saga)?;
        let completion_put = Put::builder()
            .table_name(&self.idempotency_table)
            .set_item(Some(items::idempotency_item(completion)))
            .build()
            .map_err(unavailable)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(saga_put).build())
            .transact_items(TransactWriteItem::builder().put(completion_put).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if is_lost_race(e.err()) => Err(conflict(saga)),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// Whether a cancelled transaction lost a race (the version moved, or another transaction held the
/// item), which the caller resolves by reloading; anything else is the service's trouble.
fn is_lost_race(e: &TransactWriteItemsError) -> bool {
    match e {
        TransactWriteItemsError::TransactionCanceledException(c) => c
            .cancellation_reasons()
            .iter()
            .any(|r| matches!(r.code(), Some("ConditionalCheckFailed" | "TransactionConflict"))),
        _ => false,
    }
}

#[async_trait]
impl IdempotencyStore for DynamoState {
    async fn try_insert(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, Error> {
        let names = [
            ("#pk", attr::PK),
            ("#expires_ms", attr::EXPIRES_AT_MS),
            ("#state", attr::STATE),
            ("#lease", attr::LEASE_UNTIL),
        ];
        let values = [
            (":now_ms", items::ms_value(now)),
            (
                ":in_progress",
                AttributeValue::S(items::STATE_IN_PROGRESS.to_owned()),
            ),
        ];
        for _ in 0..WRITE_ATTEMPTS {
            let table = &self.idempotency_table;
            match self
                .put_unless(
                    table,
                    items::idempotency_item(record),
                    CLAIM_CONDITION,
                    &names,
                    &values,
                )
                .await?
            {
                Conditional::Written => return Ok(None),
                Conditional::Blocked(Some(item)) => return items::idempotency_of(&item).map(Some),
                Conditional::Blocked(None) => {
                    // The live record was not returned with the failure: read it. If it is no longer
                    // live (released or lapsed in between), claim again.
                    if let Some(item) = self.get_item(table, record.key.as_str()).await? {
                        let existing = items::idempotency_of(&item)?;
                        if existing.is_live(now) {
                            return Ok(Some(existing));
                        }
                    }
                }
            }
        }
        Err(Error::Conflict {
            what: format!("idempotency record {}", record.key),
        })
    }

    async fn release(&self, claim: &IdempotencyRecord) -> Result<(), Error> {
        if !matches!(claim.state, RecordState::InProgress { .. }) {
            return Ok(());
        }
        // Deletes only if the stored record is still exactly our claim: a later delivery that took the
        // key over after our lease lapsed, or our own completion, must survive.
        let result = self
            .client
            .delete_item()
            .table_name(&self.idempotency_table)
            .set_key(Some(items::key(claim.key.as_str())))
            .condition_expression("#item = :claim")
            .expression_attribute_names("#item", attr::ITEM)
            .expression_attribute_values(":claim", items::idempotency_json(claim))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>, Error> {
        self.get_item(&self.idempotency_table, key.as_str())
            .await?
            .map(|i| items::idempotency_of(&i))
            .transpose()
    }
}

#[async_trait]
impl SagaStore for DynamoState {
    async fn create(&self, saga: &Saga) -> Result<Option<Saga>, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let item = items::saga_item(saga, self.saga_retention);
            let blocked = self.put_unless(
                &self.saga_table,
                item,
                "attribute_not_exists(#pk)",
                &[("#pk", attr::PK)],
                &[],
            );
            match blocked.await? {
                Conditional::Written => return Ok(None),
                Conditional::Blocked(Some(item)) => return items::saga_of(&item).map(Some),
                Conditional::Blocked(None) => {
                    if let Some(existing) = self.load(&saga.id).await? {
                        return Ok(Some(existing));
                    }
                }
            }
        }
        Err(conflict(saga))
    }

    async fn load(&self, id: &SagaId) -> Result<Option<Saga>, Error> {
        self.get_item(&self.saga_table, id.as_str())
            .await?
            .map(|i| items::saga_of(&i))
            .transpose()
    }

    /// One `BatchGetItem` (strongly consistent, as `load` reads) per 100 distinct ids, the service's
    /// limit. Keys the service leaves unprocessed (throttling) are not asked again here: the port lets
    /// them out, and the step loads each on its own, with the SDK's retries.
    async fn load_many(&self, ids: &[SagaId]) -> Result<Vec<Saga>, Error> {
        let distinct: std::collections::BTreeSet<&str> = ids.iter().map(SagaId::as_str).collect();
        let distinct: Vec<&str> = distinct.into_iter().collect();
        let mut found = Vec::with_capacity(distinct.len());
        for chunk in distinct.chunks(BATCH_GET_LIMIT) {
            let keys = KeysAndAttributes::builder()
                .set_keys(Some(chunk.iter().map(|pk| items::key(pk)).collect()))
                .consistent_read(true)
                .build()
                .map_err(unavailable)?;
            let mut out = self
                .client
                .batch_get_item()
                .request_items(&self.saga_table, keys)
                .send()
                .await
                .map_err(unavailable)?;
            let returned = out
                .responses
                .as_mut()
                .and_then(|r| r.remove(&self.saga_table))
                .unwrap_or_default();
            for item in &returned {
                found.push(items::saga_of(item)?);
            }
            let unprocessed = out
                .unprocessed_keys()
                .and_then(|u| u.get(&self.saga_table))
                .map_or(0, |k| k.keys().len());
            if unprocessed > 0 {
                // Throttled: each of these sagas is read on its own by its step (a read a message again).
                tracing::info!(unprocessed, "a batch read of sagas came back in part");
            }
        }
        Ok(found)
    }

    async fn find_by_correlation(&self, correlation_id: &CorrelationId) -> Result<Option<Saga>, Error> {
        // The index is KEYS_ONLY and eventually consistent: it names the saga, the table read is consistent.
        let out = self
            .client
            .query()
            .table_name(&self.saga_table)
            .index_name(CORRELATION_INDEX)
            .key_condition_expression("#c = :c")
            .expression_attribute_names("#c", attr::CORRELATION_ID)
            .expression_attribute_values(":c", AttributeValue::S(correlation_id.as_str().to_owned()))
            .limit(1)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(pk) = out.items().first().and_then(|i| items::string_attr(i, attr::PK)) else {
            return Ok(None);
        };
        self.load(&SagaId::from_stored(pk.to_owned())).await
    }

    async fn save(&self, saga: &Saga, completion: Option<&IdempotencyRecord>) -> Result<(), Error> {
        match completion {
            Some(record) => self.save_with(saga, record).await,
            None => self.save_alone(saga).await,
        }
    }
}

impl DynamoState {
    /// The PutItem of a quarantine entry, with its retention; `put` and `keep` differ in the condition.
    fn put_quarantine(&self, item: &QuarantineItem) -> PutItemFluentBuilder {
        self.client
            .put_item()
            .table_name(&self.quarantine_table)
            .set_item(Some(items::quarantine_item(item, self.quarantine_retention)))
    }
}

#[async_trait]
impl QuarantineStore for DynamoState {
    async fn put(&self, item: &QuarantineItem) -> Result<(), Error> {
        // Unconditional: an erasure's scrub replaces the entry.
        self.put_quarantine(item).send().await.map_err(unavailable)?;
        Ok(())
    }

    async fn keep(&self, item: &QuarantineItem) -> Result<(), Error> {
        let result = self
            .put_quarantine(item)
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .send()
            .await;
        match result {
            // The entry is there: a redelivery of the same refusal, kept as first written.
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(()),
            other => other.map(drop).map_err(unavailable),
        }
    }

    async fn list(&self, limit: usize) -> Result<Vec<QuarantineItem>, Error> {
        // A Scan reads everything to sort it: fine for an operator listing a quarantine that should
        // stay small; a growing one is an alarm, not a page to read.
        let mut all = self
            .scan_all(&self.quarantine_table)
            .await?
            .iter()
            .map(items::quarantine_of)
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
        all.truncate(limit);
        Ok(all)
    }

    async fn find(&self, id: &str) -> Result<Option<QuarantineItem>, Error> {
        self.get_item(&self.quarantine_table, id)
            .await?
            .map(|i| items::quarantine_of(&i))
            .transpose()
    }
}
