//! Value types shared by all contracts. Each is built only through a constructor that rejects bad input,
//! and serde goes through that same constructor, so a deserialized event never holds an invalid value.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Why a value was refused. Carries the value's type and a human sentence; the ingest step turns it into a
/// `schema_violation` rejection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {message}")]
pub struct ValueError {
    pub kind: &'static str,
    pub message: String,
}

const ID_MAX: usize = 64;
/// Identifiers end up in DynamoDB keys and idempotency keys joined with ':' — so ':' and '#' are refused.
const ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

fn check_id(kind: &'static str, s: &str) -> Result<(), ValueError> {
    let ok = !s.is_empty()
        && s.len() <= ID_MAX
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValueError {
            kind,
            message: format!("{s:?} must match {ID_PATTERN}"),
        })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, ValueError> {
                let s = s.into();
                check_id(stringify!($name), &s)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(s: String) -> Result<Self, ValueError> {
                Self::parse(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "minLength": 1, "maxLength": ID_MAX, "pattern": ID_PATTERN })
            }
        }
    };
}

id_type!(
    /// A store (or web shop / fulfilment node) as the ERP knows it.
    StoreId
);
id_type!(
    /// A POS receipt number, unique within its store.
    ReceiptId
);
id_type!(
    /// A loyalty member.
    MemberId
);
id_type!(
    /// An ecommerce / OMS order.
    OrderId
);
id_type!(
    /// A shipment of (part of) an order.
    ShipmentId
);
id_type!(
    /// A return, unique across channels.
    ReturnId
);
id_type!(
    /// A refund paid out for a return, as the payment side names it; unique per original transaction.
    RefundId
);
id_type!(
    /// A cancellation of (lines of) an order, unique within its order.
    CancellationId
);
id_type!(
    /// A stock keeping unit.
    Sku
);
id_type!(
    /// An event id chosen by the emitter; unique per event.
    EventId
);
id_type!(
    /// A business transaction; every event of one transaction carries the same correlation id.
    CorrelationId
);
id_type!(
    /// A redemption hold on the loyalty platform.
    HoldId
);
id_type!(
    /// A document or transaction id assigned by the ERP or the loyalty platform.
    ExternalRef
);
id_type!(
    /// A loyalty tier (e.g. `silver`, `gold`).
    Tier
);
id_type!(
    /// An id an ecommerce platform gave an order or one of its lines (a Shopify order or line item id,
    /// an Adobe Commerce order or order item `entity_id`).
    PlatformId
);

/// Active ISO 4217 currency codes. Kept as a list, not just a pattern: `XYZ` is three capitals and still
/// no currency, and a typo there would post money in a currency nobody can settle.
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD",
    "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLP", "CNY",
    "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP",
    "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR",
    "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT",
    "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR",
    "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD",
    "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG",
    "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// Currencies whose minor unit is not 1/100. Whole-unit arithmetic (e.g. the loyalty rule "1 point per
/// whole currency unit") needs the exponent.
const MINOR_EXPONENT: &[(&str, u32)] = &[
    ("BHD", 3),
    ("BIF", 0),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("PYG", 0),
    ("RWF", 0),
    ("TND", 3),
    ("UGX", 0),
    ("UYU", 2),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
];

/// An ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        if ISO_4217.contains(&s) {
            let b = s.as_bytes();
            Ok(Self([b[0], b[1], b[2]]))
        } else {
            Err(ValueError {
                kind: "Currency",
                message: format!("{s:?} is not an active ISO 4217 code"),
            })
        }
    }
    pub fn as_str(&self) -> &str {
        // Only ASCII capitals from ISO_4217 are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
    /// Number of minor units per major unit, as a power of ten (2 for EUR, 0 for JPY, 3 for KWD).
    pub fn minor_exponent(&self) -> u32 {
        MINOR_EXPONENT
            .iter()
            .find(|(c, _)| *c == self.as_str())
            .map_or(2, |(_, e)| *e)
    }
    pub fn minor_per_major(&self) -> i64 {
        10_i64.pow(self.minor_exponent())
    }

    /// `minor` units of this currency as a decimal string with the currency's places (`"1234.50"`,
    /// `"-0.05"`, JPY `"1500"`): the inverse of [`Currency::minor_units`].
    pub fn decimal(&self, minor: i64) -> String {
        let places = self.minor_exponent() as usize;
        if places == 0 {
            return minor.to_string();
        }
        let per = self.minor_per_major().unsigned_abs();
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        format!("{sign}{}.{:0places$}", abs / per, abs % per)
    }

    /// A decimal string (`"129.90"`, `"-5"`) in minor units of this currency; `None` when it is not a
    /// plain decimal, has more places than the currency, or does not fit.
    pub fn minor_units(&self, text: &str) -> Option<i64> {
        let exponent = self.minor_exponent() as usize;
        let (negative, digits) = match text.trim().strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.trim()),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let fraction = fraction.trim_end_matches('0');
        if whole.is_empty() && fraction.is_empty()
            || fraction.len() > exponent
            || !whole.chars().chain(fraction.chars()).all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        let fraction: i64 = if fraction.is_empty() {
            0
        } else {
            format!("{fraction:0<exponent$}").parse().ok()?
        };
        let value = whole.checked_mul(self.minor_per_major())?.checked_add(fraction)?;
        Some(if negative { -value } else { value })
    }
}
impl TryFrom<String> for Currency {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        Self::parse(&s)
    }
}
impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}
impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl JsonSchema for Currency {
    fn schema_name() -> Cow<'static, str> {
        "Currency".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "enum": ISO_4217, "description": "ISO 4217 currency code" })
    }
}

/// JSON numbers are only exact up to 2^53 in most consumers; amounts and points stay below that.
pub const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

macro_rules! nonneg_type {
    ($(#[$doc:meta])* $name:ident, $desc:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(i64);

        impl $name {
            pub const ZERO: Self = Self(0);
            pub fn new(v: i64) -> Result<Self, ValueError> {
                if (0..=MAX_SAFE_INTEGER).contains(&v) {
                    Ok(Self(v))
                } else {
                    Err(ValueError {
                        kind: stringify!($name),
                        message: format!("{v} is outside 0..={MAX_SAFE_INTEGER}"),
                    })
                }
            }
            pub fn get(self) -> i64 {
                self.0
            }
            /// Zero (serde's `skip_serializing_if` for a count that is usually none).
            pub fn is_zero(&self) -> bool {
                self.0 == 0
            }
            /// `None` when the sum leaves the range.
            pub fn checked_add(self, other: Self) -> Option<Self> {
                Self::new(self.0 + other.0).ok()
            }
            /// `None` when `other` is the greater.
            pub fn checked_sub(self, other: Self) -> Option<Self> {
                Self::new(self.0 - other.0).ok()
            }
            /// The sum, held at the range's top: figures derived from one transaction stay below it
            /// (ingest bounds them), so the cap only keeps a bug from becoming a panic.
            pub fn saturating_add(self, other: Self) -> Self {
                Self((self.0 + other.0).min(MAX_SAFE_INTEGER))
            }
            /// The difference, or zero when `other` is the greater.
            pub fn saturating_sub(self, other: Self) -> Self {
                Self((self.0 - other.0).max(0))
            }
            /// The sum of `values`, `None` when it leaves the range.
            pub fn checked_sum(values: impl IntoIterator<Item = Self>) -> Option<Self> {
                values.into_iter().try_fold(Self::ZERO, Self::checked_add)
            }
            /// The sum of `values`, held at the range's top (see `saturating_add`).
            pub fn saturating_sum(values: impl IntoIterator<Item = Self>) -> Self {
                values.into_iter().fold(Self::ZERO, Self::saturating_add)
            }
        }
        impl TryFrom<i64> for $name {
            type Error = ValueError;
            fn try_from(v: i64) -> Result<Self, ValueError> {
                Self::new(v)
            }
        }
        impl From<$name> for i64 {
            fn from(v: $name) -> i64 {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "integer", "minimum": 0, "maximum": MAX_SAFE_INTEGER, "description": $desc })
            }
        }
    };
}

nonneg_type!(
    /// A non-negative amount of money in integer minor units (cents); its currency is the event's.
    Amount,
    "Non-negative amount in integer minor units of the event's currency"
);
nonneg_type!(
    /// A non-negative number of loyalty points.
    Points,
    "Non-negative whole number of loyalty points"
);

/// Deserializes a `u32` only within `MIN..=MAX`: the bounds the JSON Schema states hold in the Rust type
/// too, for every path that types an event (ingest's, and each step's parse of what is on the bus), so
/// no quantity or line number beyond them reaches the arithmetic.
pub fn bounded_u32<'de, D, const MIN: u32, const MAX: u32>(d: D) -> Result<u32, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let v = u32::deserialize(d)?;
    if (MIN..=MAX).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!("{v} is outside {MIN}..={MAX}")))
    }
}

/// Deserializes a list of `MIN..=MAX` items (see [`bounded_u32`]).
pub fn bounded_vec<'de, D, T, const MIN: usize, const MAX: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let v = Vec::<T>::deserialize(d)?;
    check_len::<_, D::Error, MIN, MAX>(&v)?;
    Ok(v)
}

fn check_len<T, E: serde::de::Error, const MIN: usize, const MAX: usize>(v: &[T]) -> Result<(), E> {
    if (MIN..=MAX).contains(&v.len()) {
        Ok(())
    } else {
        Err(E::custom(format!("{} items, outside {MIN}..={MAX}", v.len())))
    }
}

/// [`bounded_vec`] for an optional list.
pub fn bounded_opt_vec<'de, D, T, const MIN: usize, const MAX: usize>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let v = Option::<Vec<T>>::deserialize(d)?;
    if let Some(v) = &v {
        check_len::<_, D::Error, MIN, MAX>(v)?;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_read_as_minor_units_of_their_currency() {
        let eur = Currency::parse("EUR").unwrap();
        for (text, minor) in [
            ("123.45", 12_345),
            ("-0.05", -5),
            ("7", 700),
            ("7.5", 750),
            ("199.00", 19_900),
        ] {
            assert_eq!(eur.minor_units(text), Some(minor), "{text}");
        }
        for bad in ["1.234", "", "1e3", "--1", ".", "12,5", "99999999999999999999"] {
            assert_eq!(eur.minor_units(bad), None, "{bad:?}");
        }
        assert_eq!(Currency::parse("JPY").unwrap().minor_units("700"), Some(700));
        assert_eq!(Currency::parse("JPY").unwrap().minor_units("700.5"), None);
    }

    #[test]
    fn amounts_and_points_add_and_subtract_within_their_range() {
        let p = |v| Points::new(v).unwrap();
        assert_eq!(p(2).checked_add(p(3)), Some(p(5)));
        assert_eq!(p(MAX_SAFE_INTEGER).checked_add(p(1)), None);
        assert_eq!(p(MAX_SAFE_INTEGER).saturating_add(p(1)), p(MAX_SAFE_INTEGER));
        assert_eq!(p(3).checked_sub(p(5)), None);
        assert_eq!(p(3).saturating_sub(p(5)), Points::ZERO);
        assert_eq!(p(5).checked_sub(p(3)), Some(p(2)));
        let a = |v| Amount::new(v).unwrap();
        assert_eq!(Amount::checked_sum([a(1), a(2), a(3)]), Some(a(6)));
        assert_eq!(Amount::checked_sum([a(MAX_SAFE_INTEGER), a(1)]), None);
        assert_eq!(
            Amount::saturating_sum([a(MAX_SAFE_INTEGER), a(1)]),
            a(MAX_SAFE_INTEGER)
        );
        assert_eq!(Amount::checked_sum([]), Some(Amount::ZERO));
    }

    #[test]
    fn identifiers_refuse_separators_used_in_keys() {
        assert!(StoreId::parse("store-042").is_ok());
        assert!(StoreId::parse("a:b").is_err());
        assert!(StoreId::parse("a#b").is_err());
        assert!(StoreId::parse("").is_err());
        assert!(StoreId::parse("x".repeat(65)).is_err());
    }

    #[test]
    fn only_active_iso_currencies_are_money() {
        assert_eq!(Currency::parse("EUR").unwrap().minor_per_major(), 100);
        assert_eq!(Currency::parse("JPY").unwrap().minor_per_major(), 1);
        assert_eq!(Currency::parse("KWD").unwrap().minor_per_major(), 1000);
        assert!(Currency::parse("XYZ").is_err());
        assert!(Currency::parse("eur").is_err());
    }

    #[test]
    fn amounts_are_never_negative_nor_beyond_exact_json_integers() {
        assert!(Amount::new(-1).is_err());
        assert!(Amount::new(MAX_SAFE_INTEGER + 1).is_err());
        assert!(serde_json::from_str::<Amount>("1.5").is_err());
        assert_eq!(serde_json::from_str::<Amount>("1999").unwrap().get(), 1999);
    }
}
