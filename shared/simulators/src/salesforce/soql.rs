//! The SOQL the Salesforce front understands, read the way the SOQL and SOSL Reference describes it:
//! `SELECT <field>, … FROM <object> [WHERE <condition> [AND <condition>]…] [ORDER BY <field> [ASC|DESC],
//! …] [LIMIT <n>]`, a condition being `<field> = '<text>'`, `<field> LIKE '<prefix>%'`, `<field> IN
//! ('<text>', …)` or `<field> <|<=|>|>= <dateTime>`, the dateTime unquoted in one of the documented
//! forms (`YYYY-MM-DDThh:mm:ssZ`, `YYYY-MM-DDThh:mm:ss±hh:mm`). Relationship fields are dotted paths
//! (`JournalType.Name`). What is not in this subset (OR, NOT, parentheses around conditions,
//! functions, subqueries, other literals) is not understood: the caller answers `MALFORMED_QUERY`.

use jiff::Timestamp;

/// A parsed query.
#[derive(Debug)]
pub(super) struct Query {
    pub fields: Vec<String>,
    pub object: String,
    pub conditions: Vec<Condition>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Like,
    In,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug)]
enum Literal {
    /// A quoted text, its LIKE escapes (`\_`, `\%`) kept apart as `\u{1}` and `\u{2}`.
    Text(String),
    List(Vec<String>),
    Time(Timestamp),
}

#[derive(Debug)]
pub(super) struct Condition {
    pub field: String,
    op: Op,
    value: Literal,
}

/// A record's value of a field, as conditions compare it and answers show it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Text(String),
    Time(Timestamp),
    Number(f64),
    Null,
}

/// The escapes of a quoted text back to the characters themselves.
fn plain(text: &str) -> String {
    text.replace('\u{1}', "_").replace('\u{2}', "%")
}

impl Condition {
    /// Whether `cell` satisfies the condition; `Err` when the literal is not of the field's type (what
    /// Salesforce answers `INVALID_FIELD` for).
    pub fn matches(&self, cell: &Cell) -> Result<bool, String> {
        let mismatch = |what: &str| {
            Err(format!(
                "value of filter criterion for field '{}' must be of type {what}",
                self.field
            ))
        };
        match (&self.value, cell) {
            (Literal::Time(_), Cell::Text(_)) => mismatch("string and should be enclosed in quotes"),
            (Literal::Text(_) | Literal::List(_), Cell::Time(_)) => {
                mismatch("dateTime and should not be enclosed in quotes")
            }
            (_, Cell::Null) => Ok(false),
            (Literal::Text(value), Cell::Text(actual)) => Ok(match self.op {
                Op::Eq => *actual == plain(value),
                Op::Like => match value.strip_suffix('%') {
                    Some(prefix) if !prefix.contains(['%', '_']) => actual.starts_with(&plain(prefix)),
                    _ => false,
                },
                Op::Lt => *actual < plain(value),
                Op::Le => *actual <= plain(value),
                Op::Gt => *actual > plain(value),
                Op::Ge => *actual >= plain(value),
                Op::In => false,
            }),
            (Literal::List(values), Cell::Text(actual)) => Ok(values.iter().any(|v| plain(v) == *actual)),
            (Literal::Time(bound), Cell::Time(actual)) => Ok(match self.op {
                Op::Lt => actual < bound,
                Op::Le => actual <= bound,
                Op::Gt => actual > bound,
                Op::Ge => actual >= bound,
                Op::Eq => actual == bound,
                Op::Like | Op::In => return mismatch("string"),
            }),
            (_, Cell::Number(_)) => mismatch("double"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
    Comma,
    Op(&'static str),
}

fn tokens(soql: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = soql.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '\'' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next() {
                        None => return Err("a quoted value is not closed".into()),
                        Some('\'') => break,
                        Some('\\') => match chars.next() {
                            Some('_') => text.push('\u{1}'),
                            Some('%') => text.push('\u{2}'),
                            Some(e @ ('\'' | '\\' | '"')) => text.push(e),
                            Some('n') => text.push('\n'),
                            Some('t') => text.push('\t'),
                            other => return Err(format!("invalid escape \\{}", other.unwrap_or(' '))),
                        },
                        Some(c) => text.push(c),
                    }
                }
                out.push(Token::Text(text));
            }
            '(' | ')' | ',' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            '<' | '>' | '=' | '!' => {
                chars.next();
                let long = chars.peek() == Some(&'=');
                if long {
                    chars.next();
                }
                out.push(Token::Op(match (c, long) {
                    ('<', false) => "<",
                    ('<', true) => "<=",
                    ('>', false) => ">",
                    ('>', true) => ">=",
                    ('=', false) => "=",
                    ('!', true) => "!=",
                    _ => return Err(format!("unexpected {c}")),
                }));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "(),<>=!'".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

/// A dateTime literal in one of the documented forms, to the second.
fn date_time(word: &str) -> Option<Timestamp> {
    let b = word.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let base = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let zone = match b.get(19..)? {
        [b'Z'] => true,
        [b'+' | b'-', ..] if b.len() == 25 => digits(20..22) && b[22] == b':' && digits(23..25),
        _ => false,
    };
    if base && zone { word.parse().ok() } else { None }
}

fn is_field(word: &str) -> bool {
    word.split('.').all(|part| {
        part.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&mut self, word: &str) -> bool {
        match self.peek() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(word) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, word: &str) -> Result<(), String> {
        if self.keyword(word) {
            Ok(())
        } else {
            Err(format!("expected {word} at {:?}", self.peek()))
        }
    }

    fn field(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(w)) if is_field(&w) => Ok(w),
            other => Err(format!("expected a field name, found {other:?}")),
        }
    }

    fn condition(&mut self) -> Result<Condition, String> {
        let field = self.field()?;
        let op = match self.next() {
            Some(Token::Op("=")) => Op::Eq,
            Some(Token::Op("<")) => Op::Lt,
            Some(Token::Op("<=")) => Op::Le,
            Some(Token::Op(">")) => Op::Gt,
            Some(Token::Op(">=")) => Op::Ge,
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("LIKE") => Op::Like,
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("IN") => Op::In,
            other => return Err(format!("unexpected operator {other:?} after {field}")),
        };
        let value = match (op, self.next()) {
            (Op::Eq | Op::Like | Op::Lt | Op::Le | Op::Gt | Op::Ge, Some(Token::Text(t))) => Literal::Text(t),
            (Op::In, Some(Token::Open)) => {
                let mut values = Vec::new();
                loop {
                    match self.next() {
                        Some(Token::Text(t)) => values.push(t),
                        other => return Err(format!("expected a quoted value in IN, found {other:?}")),
                    }
                    match self.next() {
                        Some(Token::Comma) => continue,
                        Some(Token::Close) => break,
                        other => return Err(format!("expected , or ) in IN, found {other:?}")),
                    }
                }
                Literal::List(values)
            }
            (Op::Eq | Op::Lt | Op::Le | Op::Gt | Op::Ge, Some(Token::Word(w))) => {
                Literal::Time(date_time(&w).ok_or_else(|| format!("{w} is not a dateTime literal"))?)
            }
            (_, other) => return Err(format!("unexpected value {other:?} for {field}")),
        };
        Ok(Condition { field, op, value })
    }
}

/// Reads `soql`; `Err` says what was not understood.
pub(super) fn parse(soql: &str) -> Result<Query, String> {
    let mut p = Parser {
        tokens: tokens(soql)?,
        at: 0,
    };
    p.expect("SELECT")?;
    let mut fields = vec![p.field()?];
    while p.peek() == Some(&Token::Comma) {
        p.next();
        fields.push(p.field()?);
    }
    p.expect("FROM")?;
    let object = p.field()?;
    let mut conditions = Vec::new();
    if p.keyword("WHERE") {
        conditions.push(p.condition()?);
        while p.keyword("AND") {
            conditions.push(p.condition()?);
        }
    }
    if p.keyword("ORDER") {
        p.expect("BY")?;
        loop {
            p.field()?;
            let _ = p.keyword("ASC") || p.keyword("DESC");
            if p.peek() != Some(&Token::Comma) {
                break;
            }
            p.next();
        }
    }
    let mut limit = None;
    if p.keyword("LIMIT") {
        limit = match p.next() {
            Some(Token::Word(n)) => Some(n.parse().map_err(|_| format!("LIMIT {n} is not a number"))?),
            other => return Err(format!("LIMIT needs a number, found {other:?}")),
        };
    }
    match p.peek() {
        None => Ok(Query {
            fields,
            object,
            conditions,
            limit,
        }),
        Some(t) => Err(format!("unexpected token {t:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_connector_s_queries_are_read() {
        let q = parse(
            "SELECT Id, JournalType.Name FROM TransactionJournal WHERE LoyaltyProgram.Name = 'O\\'Neil \\_x' \
             AND ActivityDate >= 2026-05-28T20:26:40Z AND ActivityDate < 2026-05-29T00:00:00+01:00 \
             AND RetailSync_Reference__c LIKE 'retail-sync %' AND MemberId IN ('a', 'b') ORDER BY ActivityDate, Id DESC LIMIT 5",
        )
        .unwrap();
        assert_eq!(q.fields, ["Id", "JournalType.Name"]);
        assert_eq!(q.object, "TransactionJournal");
        assert_eq!(q.limit, Some(5));
        let c = &q.conditions;
        assert!(c[0].matches(&Cell::Text("O'Neil _x".into())).unwrap());
        assert!(c[1].matches(&Cell::Time(at("2026-05-28T20:26:40Z"))).unwrap());
        assert!(!c[1].matches(&Cell::Time(at("2026-05-28T20:26:39.999Z"))).unwrap());
        assert!(c[2].matches(&Cell::Time(at("2026-05-28T22:59:59.999Z"))).unwrap());
        assert!(!c[2].matches(&Cell::Time(at("2026-05-28T23:00:00Z"))).unwrap());
        assert!(c[3].matches(&Cell::Text("retail-sync hold x".into())).unwrap());
        assert!(!c[3].matches(&Cell::Text("retail-syncx".into())).unwrap());
        assert!(c[4].matches(&Cell::Text("b".into())).unwrap());
        assert!(!c[4].matches(&Cell::Null).unwrap());
        assert!(
            c[1].matches(&Cell::Text("x".into())).is_err(),
            "a dateTime against a text"
        );
        assert!(c[0].matches(&Cell::Time(at("2026-05-28T20:26:40Z"))).is_err());
    }

    #[test]
    fn what_is_outside_the_subset_is_not_understood() {
        for soql in [
            "",
            "SELECT FROM TransactionJournal",
            "SELECT Id FROM TransactionJournal WHERE Id = 'a' OR Id = 'b'",
            "SELECT Id FROM TransactionJournal WHERE (Id = 'a')",
            "SELECT COUNT() FROM TransactionJournal",
            "SELECT Id, (SELECT Id FROM LoyaltyLedgers) FROM TransactionJournal",
            "SELECT Id FROM TransactionJournal WHERE ActivityDate >= '2026-05-28T20:26:40Z' AND",
            "SELECT Id FROM TransactionJournal WHERE ActivityDate >= 2026-05-28T20:26:40.000Z",
            "SELECT Id FROM TransactionJournal WHERE ActivityDate >= 2026-05-28",
            "SELECT Id FROM TransactionJournal WHERE Id = 'open",
            "SELECT Id FROM TransactionJournal WHERE Id != 'a'",
            "SELECT Id FROM TransactionJournal LIMIT x",
        ] {
            assert!(parse(soql).is_err(), "{soql}");
        }
    }
}
