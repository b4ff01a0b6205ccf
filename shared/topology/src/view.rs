//! An event as a set of patterns sees it. A pattern looks at the fields it names and at nothing else, so
//! it matches an event cut down to the fields some pattern names exactly as it matches the whole event.
//! [`Lookups::view`] reads that cut-down event straight from the event's JSON text: a router then builds
//! a few small values per event instead of a tree of the whole event, the rest of the text is skipped.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::Pattern;

/// The fields a set of patterns names, as a tree: a field a pattern matches values against is kept
/// whole; a field a pattern nests into (`"detail": {"data": {…}}`) keeps only what is named under it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lookups(BTreeMap<String, Lookup>);

#[derive(Debug, Clone, PartialEq)]
enum Lookup {
    Whole,
    Within(Lookups),
}

impl Lookups {
    /// What any of `patterns` looks at.
    pub fn of<'p>(patterns: impl IntoIterator<Item = &'p Pattern>) -> Self {
        let mut lookups = Self::default();
        for pattern in patterns {
            lookups.add(pattern.as_json());
        }
        lookups
    }

    fn add(&mut self, pattern: &Value) {
        let Value::Object(fields) = pattern else {
            return;
        };
        for (name, spec) in fields {
            if spec.is_object() {
                let lookup = self
                    .0
                    .entry(name.clone())
                    .or_insert_with(|| Lookup::Within(Self::default()));
                // A field another pattern matches whole stays whole: it holds what this one nests into.
                if let Lookup::Within(inner) = lookup {
                    inner.add(spec);
                }
            } else {
                self.0.insert(name.clone(), Lookup::Whole);
            }
        }
    }

    /// The event of the JSON text `event` holding only the fields looked at. A field looked into that is
    /// not an object (a string, an array) is kept whole, as a pattern would meet it in the whole event.
    pub fn view(&self, event: &str) -> Result<Value, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(event);
        let view = Keep(self).deserialize(&mut de)?;
        de.end()?;
        Ok(view)
    }
}

/// Reads one value, keeping of an object only the fields of its lookups.
struct Keep<'l>(&'l Lookups);

impl<'de> DeserializeSeed<'de> for Keep<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Keep<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(Key(name)) = map.next_key::<Key<'de>>()? {
            match self.0.0.get(name.as_ref()) {
                Some(Lookup::Whole) => {
                    kept.insert(name.into_owned(), map.next_value::<Value>()?);
                }
                Some(Lookup::Within(inner)) => {
                    kept.insert(name.into_owned(), map.next_value_seed(Keep(inner))?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    // Anything but an object is kept whole, as `Value` reads it.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// An object's key, borrowed from the text when it has no escapes: a skipped field costs no allocation.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(v.to_owned().into()))
            }

            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(v: Value) -> Pattern {
        Pattern::compile(v).unwrap()
    }

    #[test]
    fn a_view_holds_what_some_pattern_names_and_nothing_else() {
        let patterns = [
            p(json!({"source": ["retail-sync"], "detail": {"data": {"transaction": {"kind": ["receipt"]}}}})),
            p(
                json!({"detail-type": ["OrderPlaced"], "detail": {"data": {"redemption": {"hold_id": [{"exists": true}]}}}}),
            ),
        ];
        let lookups = Lookups::of(&patterns);
        let event = json!({
            "version": "0", "id": "e-1", "source": "retail-sync", "detail-type": "ErpSalePosted",
            "detail": {
                "metadata": {"event_id": "e-1"},
                "data": {
                    "transaction": {"kind": "receipt", "store_id": "s-1"},
                    "redemption": "not an object",
                    "lines": [{"sku": "a"}],
                    "escaped\"key": {"kind": 1},
                },
            },
        });
        let view = lookups.view(&event.to_string()).unwrap();
        assert_eq!(
            view,
            json!({
                "source": "retail-sync", "detail-type": "ErpSalePosted",
                "detail": {"data": {"transaction": {"kind": "receipt"}, "redemption": "not an object"}},
            })
        );
    }

    #[test]
    fn a_field_one_pattern_matches_whole_stays_whole_for_the_others() {
        let patterns = [
            p(json!({"detail": {"data": {"kind": ["a"]}}})),
            p(json!({"detail": [{"exists": true}]})),
        ];
        let event = json!({"detail": {"data": {"kind": "a", "other": [1, 2.5, null, true]}}, "id": "x"});
        let view = Lookups::of(&patterns).view(&event.to_string()).unwrap();
        assert_eq!(view, json!({"detail": event["detail"].clone()}));
    }

    #[test]
    fn patterns_match_a_view_as_they_match_the_whole_event() {
        let patterns = [
            p(json!({"source": [{"prefix": "retail."}], "detail-type": ["SaleCompleted"]})),
            p(json!({"detail": {"data": {"redemption": {"hold_id": [{"exists": false}]}}}})),
            p(json!({"detail": {"data": {"redemption": {"hold_id": [{"exists": true}]}}}})),
            p(json!({"detail": {"data": {"total": [{"numeric": [">", 10]}]}}})),
            p(json!({"detail": {"data": {"tags": ["vip"]}}})),
            p(json!({"detail": {"data": {"transaction": {"kind": [{"anything-but": "order"}]}}}})),
        ];
        let events = [
            json!({"source": "retail.pos", "detail-type": "SaleCompleted", "detail": {"data": {}}}),
            json!({"source": "retail.web", "detail-type": "OrderPlaced", "detail": {"data": {"redemption": {"hold_id": "h"}, "total": 12}}}),
            json!({"source": "retail.web", "detail": {"data": {"redemption": {"hold_id": {"nested": 1}}, "total": 9.5}}}),
            json!({"detail": {"data": {"redemption": null, "tags": ["a", "vip"], "transaction": {"kind": "receipt"}}}}),
            json!({"detail": {"data": {"transaction": "receipt", "tags": "vip"}}}),
            json!({"detail": "text", "source": ["retail.pos"]}),
            json!({}),
        ];
        let lookups = Lookups::of(&patterns);
        for event in &events {
            let view = lookups.view(&event.to_string()).unwrap();
            for pattern in &patterns {
                assert_eq!(
                    pattern.matches(&view),
                    pattern.matches(event),
                    "{pattern:?} on {event}"
                );
            }
        }
    }

    #[test]
    fn text_that_is_not_json_is_an_error() {
        let lookups = Lookups::of(&[p(json!({"source": ["a"]}))]);
        assert!(lookups.view("{\"source\": ").is_err());
        assert!(lookups.view("{} trailing").is_err());
        // A field looked at is read as serde_json reads any value, within its nesting limit (128).
        let deep = format!("{{\"source\": {}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(lookups.view(&deep).is_err());
        // A field skipped is not read into anything, however deep.
        let skipped = format!("{{\"other\": {}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(lookups.view(&skipped).unwrap(), serde_json::json!({}));
    }
}
