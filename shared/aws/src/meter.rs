//! What AWS bills for the requests the SDK sends, worked out from the requests themselves: DynamoDB
//! request units from the sizes of the items written and read, EventBridge events and SQS requests in
//! the 64 KB chunks they are billed in. Only the cost benchmark installs it (it reads every request's
//! input, which a function has no reason to pay for).
//!
//! The rules are AWS's published ones (DynamoDB developer guide, "DynamoDB item sizes and formats";
//! EventBridge, "Calculating PutEvents event entry size"; SQS pricing, "each 64 KB chunk of a payload
//! is billed as 1 request"). What a request cannot show is approximated, and said where.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::operation::batch_get_item::{BatchGetItemInput, BatchGetItemOutput};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemInput;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_eventbridge::operation::put_events::PutEventsInput;
use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityInput;
use aws_sdk_sqs::operation::change_message_visibility_batch::ChangeMessageVisibilityBatchInput;
use aws_sdk_sqs::operation::send_message::SendMessageInput;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchInput;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::items::attr;

/// EventBridge and SQS bill a payload in chunks of this size.
pub const CHUNK: usize = 64 * 1024;

/// The billable units counted so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bill {
    /// DynamoDB on-demand write request units: one per KB (rounded up) of each item written, two in a
    /// transaction, plus the saga table's index entry when a saga is created.
    pub write_units: u64,
    /// Of `write_units`: those spent inside transactions (doubled already), on index entries, and on
    /// the kilobytes beyond the first of items over 1 KB (what a smaller item would save).
    pub transaction_write_units: u64,
    pub index_write_units: u64,
    pub oversize_write_units: u64,
    /// DynamoDB read request units: one per 4 KB (rounded up) of a strongly consistent read (GetItem
    /// and BatchGetItem, per item, as the adapter reads), half that for the eventually consistent
    /// Query and Scan.
    pub read_units: f64,
    /// EventBridge entries put, as billed (each in 64 KB chunks).
    pub bus_billed_events: u64,
    /// The functions' own SQS requests as billed (64 KB chunks of a send's payload; one for a
    /// visibility change).
    pub sqs_billed_requests: u64,
    /// Items written, by table: how many and their total size in bytes.
    pub items_written: BTreeMap<String, (u64, u64)>,
}

impl Bill {
    /// Adds `other`'s units to these.
    pub fn add(&mut self, other: &Bill) {
        self.write_units += other.write_units;
        self.transaction_write_units += other.transaction_write_units;
        self.index_write_units += other.index_write_units;
        self.oversize_write_units += other.oversize_write_units;
        self.read_units += other.read_units;
        self.bus_billed_events += other.bus_billed_events;
        self.sqs_billed_requests += other.sqs_billed_requests;
        for (table, (n, bytes)) in &other.items_written {
            let written = self.items_written.entry(table.clone()).or_default();
            written.0 += n;
            written.1 += bytes;
        }
    }
}

/// Shared by clones: give one to every client's interceptor and read it from anywhere.
#[derive(Debug, Clone, Default)]
pub struct BillingMeter {
    bill: Arc<Mutex<Bill>>,
}

impl BillingMeter {
    pub fn new() -> Self {
        Self::default()
    }

    fn bill(&self) -> MutexGuard<'_, Bill> {
        self.bill.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Bill {
        self.bill().clone()
    }

    pub fn reset(&self) {
        *self.bill() = Bill::default();
    }

    /// The interceptor to install on a client config builder (one serves every service: it knows an
    /// operation by its input's type).
    pub fn interceptor(&self) -> MeteringInterceptor {
        MeteringInterceptor { meter: self.clone() }
    }
}

#[derive(Debug)]
pub struct MeteringInterceptor {
    meter: BillingMeter,
}

impl Intercept for MeteringInterceptor {
    fn name(&self) -> &'static str {
        "BillingMeter"
    }

    // Once per operation: an SDK retry of the same request is not counted again here (the request
    // counter counts attempts).
    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let input = context.input();
        let mut bill = self.meter.bill();
        if let Some(put) = input.downcast_ref::<PutItemInput>() {
            if let (Some(table), Some(item)) = (put.table_name(), put.item()) {
                write(&mut bill, table, item, 1, put.condition_expression());
            }
        } else if let Some(tx) = input.downcast_ref::<TransactWriteItemsInput>() {
            for op in tx.transact_items() {
                if let Some(put) = op.put() {
                    write(
                        &mut bill,
                        put.table_name(),
                        put.item(),
                        2,
                        put.condition_expression(),
                    );
                } else {
                    // Update, Delete, ConditionCheck: the item is not in the request; one unit (the
                    // adapter's are small records), doubled.
                    bill.write_units += 2;
                    bill.transaction_write_units += 2;
                }
            }
        } else if input.downcast_ref::<UpdateItemInput>().is_some()
            || input.downcast_ref::<DeleteItemInput>().is_some()
        {
            // Billed by the item's size, which the request does not carry: one unit (the adapter
            // updates and deletes only idempotency and quarantine records, all under 1 KB).
            bill.write_units += 1;
        } else if let Some(batch) = input.downcast_ref::<BatchGetItemInput>() {
            // Every key asked for costs a read's minimum (a key that names no item too): one unit
            // strongly consistent, half eventually; what an item beyond 4 KB adds is counted from the
            // answer.
            for keys in batch.request_items().into_iter().flat_map(HashMap::values) {
                let per_key = if keys.consistent_read() == Some(true) {
                    1.0
                } else {
                    0.5
                };
                bill.read_units += keys.keys().len() as f64 * per_key;
            }
        } else if let Some(put) = input.downcast_ref::<PutEventsInput>() {
            for entry in put.entries() {
                let size = entry.time().map_or(0, |_| 14)
                    + entry.source().map_or(0, str::len)
                    + entry.detail_type().map_or(0, str::len)
                    + entry.detail().map_or(0, str::len)
                    + entry.resources().iter().map(String::len).sum::<usize>();
                bill.bus_billed_events += chunks(size);
            }
        } else if let Some(send) = input.downcast_ref::<SendMessageInput>() {
            let size = send.message_body().map_or(0, str::len) + attributes_size(send.message_attributes());
            bill.sqs_billed_requests += chunks(size);
        } else if let Some(batch) = input.downcast_ref::<SendMessageBatchInput>() {
            let size: usize = batch
                .entries()
                .iter()
                .map(|e| e.message_body().len() + attributes_size(e.message_attributes()))
                .sum();
            bill.sqs_billed_requests += chunks(size);
        } else if input.downcast_ref::<ChangeMessageVisibilityInput>().is_some()
            || input
                .downcast_ref::<ChangeMessageVisibilityBatchInput>()
                .is_some()
        {
            // A function's own backoff of a failed message.
            bill.sqs_billed_requests += 1;
        }
        // Receives and deletes are left out on purpose: on AWS the event source mapping makes them (a
        // cost estimate counts one of each per batch), and the local runner's polling differs.
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Some(Ok(output)) = context.output_or_error() else {
            return Ok(());
        };
        let units = if let Some(get) = output.downcast_ref::<GetItemOutput>() {
            // A strongly consistent read of a missing item still costs a unit.
            read_units(get.item().map_or(0, item_size)).max(1) as f64
        } else if let Some(batch) = output.downcast_ref::<BatchGetItemOutput>() {
            // The minimum of each key was counted from the request; the adapter's batch reads are
            // strongly consistent, a unit per 4 KB.
            batch
                .responses()
                .into_iter()
                .flat_map(HashMap::values)
                .flatten()
                .map(|item| read_units(item_size(item)).saturating_sub(1) as f64)
                .sum()
        } else if let Some(query) = output.downcast_ref::<QueryOutput>() {
            read_units(query.items().iter().map(item_size).sum()).max(1) as f64 / 2.0
        } else if let Some(scan) = output.downcast_ref::<ScanOutput>() {
            read_units(scan.items().iter().map(item_size).sum()).max(1) as f64 / 2.0
        } else {
            return Ok(());
        };
        self.meter.bill().read_units += units;
        Ok(())
    }
}

/// One item written `factor` times over (2 in a transaction).
fn write(
    bill: &mut Bill,
    table: &str,
    item: &HashMap<String, AttributeValue>,
    factor: u64,
    condition: Option<&str>,
) {
    let size = item_size(item);
    let units = factor * write_units(size);
    bill.write_units += units;
    bill.oversize_write_units += units - factor;
    if factor > 1 {
        bill.transaction_write_units += units;
    }
    // The saga table's by-correlation index (KEYS_ONLY, see the template) gets an entry when a saga
    // is created; later versions keep the same correlation id and so write no index entry.
    if item.contains_key(attr::CORRELATION_ID)
        && condition.is_some_and(|c| c.contains("attribute_not_exists"))
    {
        bill.write_units += 1;
        bill.index_write_units += 1;
    }
    let written = bill.items_written.entry(table.to_owned()).or_default();
    written.0 += 1;
    written.1 += size as u64;
}

fn chunks(size: usize) -> u64 {
    size.div_ceil(CHUNK).max(1) as u64
}

pub fn write_units(size: usize) -> u64 {
    size.div_ceil(1024).max(1) as u64
}

fn read_units(size: usize) -> u64 {
    size.div_ceil(4096) as u64
}

fn attributes_size(attributes: Option<&HashMap<String, MessageAttributeValue>>) -> usize {
    attributes.map_or(0, |a| {
        a.iter()
            .map(|(name, v)| {
                name.len()
                    + v.data_type().len()
                    + v.string_value().map_or(0, str::len)
                    + v.binary_value().map_or(0, |b| b.as_ref().len())
            })
            .sum()
    })
}

/// An item's size by DynamoDB's rules: each attribute's name plus its value.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(name, v)| name.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        // 3 bytes for the container, 1 per element.
        AttributeValue::L(list) => 3 + list.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, e)| 1 + k.len() + value_size(e))
                .sum::<usize>()
        }
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    }
}

/// About one byte per two significant digits, plus one (leading and trailing zeroes trimmed).
fn number_size(n: &str) -> usize {
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    1 + significant.div_ceil(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn item_sizes_follow_the_published_rules() {
        // "pk" (2) + "order-1" (7) = 9; "n" (1) + 12300 → 123 → 2 bytes + 1 = 4; "b" (1) + 1.
        let item = HashMap::from([
            ("pk".to_owned(), s("order-1")),
            ("n".to_owned(), AttributeValue::N("12300".into())),
            ("b".to_owned(), AttributeValue::Bool(true)),
        ]);
        assert_eq!(item_size(&item), 9 + 4 + 2);
        // A list of two strings: 3 + (1 + 1) + (1 + 2); a map {"k": "v"}: 3 + 1 + 1 + 1.
        let nested = HashMap::from([
            ("l".to_owned(), AttributeValue::L(vec![s("a"), s("bc")])),
            (
                "m".to_owned(),
                AttributeValue::M(HashMap::from([("k".to_owned(), s("v"))])),
            ),
        ]);
        assert_eq!(item_size(&nested), (1 + 3 + 2 + 3) + (1 + 3 + 3));
        assert_eq!(number_size("-0.0012"), 2);
        assert_eq!(number_size("1800000000123.456789"), 11);
    }

    #[test]
    fn units_round_up_by_kilobyte_and_chunk() {
        assert_eq!(write_units(0), 1);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
        assert_eq!(read_units(4097), 2);
        assert_eq!(chunks(10), 1);
        assert_eq!(chunks(CHUNK + 1), 2);
    }

    #[test]
    fn a_transaction_bills_each_put_twice_and_a_creation_its_index_entry() {
        let mut bill = Bill::default();
        let big = HashMap::from([
            ("pk".to_owned(), s("saga-1")),
            ("item".to_owned(), s(&"x".repeat(1500))),
            (attr::CORRELATION_ID.to_owned(), s("c-1")),
        ]);
        write(&mut bill, "sagas", &big, 2, Some("#version = :prev"));
        assert_eq!(bill.write_units, 4, "two KB, twice");
        write(&mut bill, "sagas", &big, 1, Some("attribute_not_exists(#pk)"));
        assert_eq!(bill.write_units, 4 + 2 + 1, "two KB and the index entry");
        assert_eq!(bill.transaction_write_units, 4);
        assert_eq!(bill.index_write_units, 1);
        assert_eq!(
            bill.oversize_write_units,
            2 + 1,
            "the second KB, twice, then once"
        );
        assert_eq!(bill.items_written["sagas"].0, 2);
    }
}
