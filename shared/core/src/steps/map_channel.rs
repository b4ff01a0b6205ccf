//! `map-shopify`, `map-adobe-commerce`: an ecommerce platform's native event in, canonical events out, on
//! the channel bus under the platform's channel source, where ingest validates them as it validates any
//! channel's. The mapping itself is `retail_sync_channels`; this step adds what it needs from our state
//! (a follow-up's order as accepted, to find its lines by the platform's line ids) and the outcomes:
//! a native event that cannot be mapped is quarantined with its payload and the findings, one that means
//! nothing for the books is counted and logged, and a follow-up whose order is not accepted yet waits.

use std::sync::Arc;

use async_trait::async_trait;

use retail_sync_channels::{Mapped, Mapper, Native, Unmappable};
use retail_sync_contracts::events::{ReasonCode, TransactionRef};
use retail_sync_contracts::{Event, Rejection};

use crate::error::Error;
use crate::ports::{Metrics, Outgoing, SagaStore};
use crate::saga::SagaId;
use crate::steps::{Message, Step};

pub struct MapChannel {
    pub mapper: Arc<dyn Mapper>,
    pub sagas: Arc<dyn SagaStore>,
    pub metrics: Arc<dyn Metrics>,
}

/// The refusal of a native event: one finding per problem (a refusal that names one problem is its own
/// finding), under the event's id and topic when they are known, so a redelivery is the same entry.
fn unmappable(u: Unmappable, native: Option<&Native>) -> Error {
    let event = native.map(|n| (n.event_id.clone(), n.topic.clone())).or(u.event);
    let findings = if u.findings.is_empty() {
        vec![u.message.clone()]
    } else {
        u.findings
    };
    Error::BadInput(Box::new(Rejection {
        reason: ReasonCode::Unmappable,
        message: u.message,
        findings,
        detail_type: event.as_ref().map(|(_, topic)| topic.clone()),
        event_id: event.map(|(id, _)| id),
        correlation_id: None,
    }))
}

#[async_trait]
impl Step for MapChannel {
    fn name(&self) -> &'static str {
        self.mapper.platform().step()
    }

    async fn handle(&self, message: &Message) -> Result<Vec<Outgoing>, Error> {
        let platform = self.mapper.platform();
        let native = self
            .mapper
            .parse(&message.body)
            .map_err(|u| unmappable(u, None))?;
        let order = match self
            .mapper
            .needs_order(&native)
            .map_err(|u| unmappable(u, Some(&native)))?
        {
            None => None,
            Some(order_id) => {
                let saga_id = SagaId::of(&TransactionRef::Order {
                    order_id: order_id.clone(),
                });
                // Platforms deliver in no particular order: a refund may come before its order was
                // accepted. It waits (redelivered with backoff) rather than guessing its lines.
                let saga = self.sagas.load(&saga_id).await?.ok_or_else(|| Error::NotYet {
                    what: format!(
                        "order {order_id}, which this {} refers to, to be accepted",
                        native.topic
                    ),
                })?;
                match saga.origin_event()? {
                    Event::OrderPlaced(placed) => Some(placed.data),
                    _ => {
                        let message = format!("{saga_id} is not an order's saga");
                        return Err(unmappable(Unmappable::new(message), Some(&native)));
                    }
                }
            }
        };
        match self
            .mapper
            .map(&native, order.as_ref())
            .map_err(|u| unmappable(u, Some(&native)))?
        {
            Mapped::Events(events) => {
                self.metrics.add(
                    "channel_events_mapped",
                    events.len() as u64,
                    Some(("topic", &native.topic)),
                );
                Ok(events
                    .into_iter()
                    .map(|event| Outgoing {
                        source: platform.source(),
                        event,
                    })
                    .collect())
            }
            Mapped::Ignored(reason) => {
                // Ids and the topic only: payloads hold customers' personal data.
                tracing::info!(platform = platform.name(), topic = %native.topic, event_id = %native.event_id, %reason, "nothing for the books");
                self.metrics
                    .add("channel_events_ignored", 1, Some(("topic", &native.topic)));
                Ok(Vec::new())
            }
        }
    }
}
