//! The reference text retail-sync writes on every SAP document it creates or changes (header text
//! `text_id` of the mapping), and reads back for reconciliation:
//!
//! ```text
//! retail-sync <stamp> <fact>=<id> [<name>=<value>]...
//! ```
//!
//! Words are separated by single spaces; no value holds a space (identifiers, saga ids and RFC 3339
//! instants never do). The first word after the stamp says which of our facts the document stands for:
//! - `transaction=<saga id> at=<business time>`: a sales order (a sale or an order);
//! - `return=<return id> original=<saga id> [store=<store id>] at=<business time>`: a customer return;
//! - `cancellation=<cancellation id> at=<business time> items=<changes>` and
//!   `reinstatement=<shipment id> at=<business time> items=<changes>`: a change set on a sales order's
//!   items. `<changes>` lists every item the change set changed, comma-separated, as
//!   `<item>/<ordered>:<before>><after>`: the SAP item number, the units it was ordered with, and its
//!   open units before and after (`10/2:2>1`: item 10, ordered 2, one of its two open units cancelled).
//!
//! `at=` and `items=` are what SAP's own fields cannot give back: `CustomerPurchaseOrderDate` is a date
//! without a time, and an item shows only its current quantity. Texts written before they were
//! recorded lack them (the sale's and the return's business time then falls back to
//! `CustomerPurchaseOrderDate`; a change without them cannot be read back).

use jiff::Timestamp;

/// The first word of every retail-sync reference text.
const PREFIX: &str = "retail-sync";

/// What retail-sync writes in the reference text of a document, after its stamp: which of our facts it
/// stands for. The stamp comes first so that a look at the order's texts finds it.
pub fn reference_text(stamp: &str, fact: &str) -> String {
    format!("{PREFIX} {stamp} {fact}")
}

/// One item changed by a cancellation or a reinstatement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemChange {
    /// SAP's item number (`10` for line 1).
    pub item: String,
    /// The units the item was ordered with.
    pub ordered: u32,
    /// Its open units before the change and after it.
    pub before: u32,
    pub after: u32,
}

/// `items=`'s value for `changes`.
pub fn items_text(changes: &[ItemChange]) -> String {
    changes
        .iter()
        .map(|c| format!("{}/{}:{}>{}", c.item, c.ordered, c.before, c.after))
        .collect::<Vec<_>>()
        .join(",")
}

/// A retail-sync reference text, split into its stamp and its `name=value` words.
#[derive(Debug, Clone)]
pub struct Reference<'a> {
    pub stamp: &'a str,
    words: Vec<(&'a str, &'a str)>,
}

impl<'a> Reference<'a> {
    /// `None` for a text that is not retail-sync's (someone else's note on the document).
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut words = text.split(' ');
        if words.next() != Some(PREFIX) {
            return None;
        }
        let stamp = words.next().filter(|s| !s.is_empty())?;
        let words = words.filter_map(|w| w.split_once('=')).collect();
        Some(Self { stamp, words })
    }

    /// The value of the first `name=` word.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.words.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// The business time (`at=`), when the text records it.
    pub fn at(&self) -> Result<Option<Timestamp>, String> {
        self.get("at")
            .map(|v| {
                v.parse::<Timestamp>()
                    .map_err(|_| format!("at={v:?} is not an RFC 3339 instant"))
            })
            .transpose()
    }

    /// The item changes (`items=`), when the text records them.
    pub fn items(&self) -> Result<Option<Vec<ItemChange>>, String> {
        let Some(value) = self.get("items") else {
            return Ok(None);
        };
        if value.is_empty() {
            return Ok(Some(Vec::new()));
        }
        value
            .split(',')
            .map(item_change)
            .collect::<Result<_, _>>()
            .map(Some)
    }
}

fn item_change(text: &str) -> Result<ItemChange, String> {
    let bad = || format!("items entry {text:?} is not <item>/<ordered>:<before>><after>");
    let (item, rest) = text.split_once('/').ok_or_else(bad)?;
    let (ordered, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (before, after) = rest.split_once('>').ok_or_else(bad)?;
    let number = |s: &str| s.parse::<u32>().map_err(|_| bad());
    if item.is_empty() || !item.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let change = ItemChange {
        item: item.to_owned(),
        ordered: number(ordered)?,
        before: number(before)?,
        after: number(after)?,
    };
    if change.before > change.ordered || change.after > change.ordered {
        return Err(format!(
            "items entry {text:?} has more open units than were ordered"
        ));
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_text_round_trips() {
        let changes = vec![
            ItemChange {
                item: "10".into(),
                ordered: 2,
                before: 2,
                after: 1,
            },
            ItemChange {
                item: "20".into(),
                ordered: 3,
                before: 0,
                after: 3,
            },
        ];
        let at: Timestamp = "2026-05-28T20:26:40.5Z".parse().unwrap();
        let text = reference_text(
            "order:o-1:cancel-order",
            &format!("cancellation=cx-1 at={at} items={}", items_text(&changes)),
        );
        assert_eq!(
            text,
            "retail-sync order:o-1:cancel-order cancellation=cx-1 at=2026-05-28T20:26:40.5Z items=10/2:2>1,20/3:0>3"
        );
        let r = Reference::parse(&text).unwrap();
        assert_eq!(r.stamp, "order:o-1:cancel-order");
        assert_eq!(r.get("cancellation"), Some("cx-1"));
        assert_eq!(r.at().unwrap(), Some(at));
        assert_eq!(r.items().unwrap(), Some(changes));
    }

    #[test]
    fn texts_that_are_not_ours_or_not_readable_say_so() {
        assert!(Reference::parse("delivered at the back door").is_none());
        assert!(Reference::parse("retail-sync").is_none());
        let old = Reference::parse("retail-sync s cancellation=cx-1").unwrap();
        assert_eq!((old.at().unwrap(), old.items().unwrap()), (None, None));
        for bad in [
            "10",
            "10/2",
            "10/2:1",
            "x/2:1>0",
            "10/2:3>0",
            "10/-1:0>0",
            "/2:1>0",
        ] {
            let text = format!("retail-sync s cancellation=c items={bad}");
            assert!(Reference::parse(&text).unwrap().items().is_err(), "{bad}");
        }
        let text = "retail-sync s transaction=order:o-1 at=yesterday";
        assert!(Reference::parse(text).unwrap().at().is_err());
        assert_eq!(
            Reference::parse("retail-sync s cancellation=c items=")
                .unwrap()
                .items(),
            Ok(Some(Vec::new()))
        );
    }
}
