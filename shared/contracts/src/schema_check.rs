//! Checks a `detail` against its type's generated JSON Schema: the keywords our schemas use, and only
//! those.
//!
//! Why not a general JSON Schema validator: our schemas are generated from the Rust types (schemars) and
//! use a small set of keywords (below). A general validator (the `jsonschema` crate, with two regular
//! expression engines, a resolver for remote references and every draft's keywords) took 3.9 MB of
//! `ingest`'s 13.3 MB binary (1.4 MB of its 5.1 MB zip), and its first compilation in a container took
//! 2.3 ms or more; this one takes 0.3 to 0.6 ms for the first, generating the schema included (README,
//! "Performance"). It links only `regex-lite`, which the AWS SDK links anyway.
//!
//! What it takes: `type` (a name or a list of names), `const`, `enum`, `minimum`, `maximum`, `minLength`,
//! `maxLength`, `pattern`, `items`, `minItems`, `maxItems`, `properties`, `additionalProperties` (`true`,
//! or `false`), `required`, `anyOf`, `oneOf`, and `$ref` to `#/$defs/<name>` (a loop of references that
//! never descends into a member or an item is refused); `format` is an annotation
//! in draft 2020-12 (as the general validator treated it), like `description`, `title` and `default`.
//! Any other keyword is refused when the schema is compiled, so a type whose generated schema starts using
//! one fails `every_supported_schema_compiles_and_is_kept` instead of going unchecked.
//!
//! The findings are worded as the general validator worded them, and come in the same order: a test
//! (`tests/contracts.rs`, `findings_are_those_of_a_general_json_schema_validator`) compares the two on
//! every sample event changed in every place, so what an operator reads in a quarantine entry, and the
//! entry's id (a digest of its findings), did not change with the validator.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// One violation: where in the document (a JSON pointer, `""` for the whole document) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub pointer: String,
    pub message: String,
    /// For a `required` violation, the member that is missing.
    pub missing: Option<String>,
}

/// `<pointer>: <message>`, as a finding is listed.
impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.pointer, self.message)
    }
}

/// A compiled schema: the root's checks and those of each `$defs` entry a `$ref` names.
#[derive(Debug)]
pub struct Schema {
    root: Node,
    defs: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    checks: Vec<Check>,
}

#[derive(Debug)]
enum Check {
    Ref(usize),
    /// `additionalProperties: false` with its sibling `properties`: each known member is checked against
    /// its schema and the others are named in one finding. A `required` of one name is checked here, after
    /// the members (the general validator did so, and its findings came in that order); a longer one is a
    /// check of its own, run before this one.
    Closed(Vec<(String, Node)>, Option<String>),
    /// `properties` without `additionalProperties: false`.
    Properties(Vec<(String, Node)>),
    Required(Vec<String>),
    AnyOf(Vec<Node>),
    OneOf(Vec<Node>),
    Const(Value),
    /// The options as written (for the finding), and sorted for a lookup when every one is text.
    Enum(Vec<Value>, Option<Vec<String>>),
    Items(Box<Node>),
    MinItems(u64),
    MaxItems(u64),
    MinLength(u64),
    MaxLength(u64),
    Minimum(Number),
    Maximum(Number),
    Pattern(Matcher, String),
    /// One type name, or a list of them (`["string", "null"]` for an optional value).
    Type(Vec<Kind>),
}

impl Check {
    /// The order a schema object's checks run in (the general validator's: a type first, references
    /// last); checks of one rank run in the order of their keywords.
    fn rank(&self) -> u8 {
        match self {
            Check::Type(_) => 1,
            Check::Const(_) => 5,
            Check::Enum(..) => 6,
            Check::Minimum(_) => 10,
            Check::Maximum(_) => 11,
            Check::MinLength(_) => 20,
            Check::MaxLength(_) => 21,
            Check::MinItems(_) => 22,
            Check::MaxItems(_) => 23,
            Check::Required(_) => 26,
            Check::Pattern(..) => 30,
            Check::Properties(_) => 40,
            Check::Closed(..) => 42,
            Check::Items(_) => 44,
            Check::AnyOf(_) => 51,
            Check::OneOf(_) => 52,
            Check::Ref(_) => 70,
        }
    }
}

/// JSON's types, in the order a finding lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Null,
    Boolean,
    Integer,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Null,
        Kind::Boolean,
        Kind::Integer,
        Kind::Number,
        Kind::String,
        Kind::Array,
        Kind::Object,
    ];

    fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Boolean => "boolean",
            Kind::Integer => "integer",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Array => "array",
            Kind::Object => "object",
        }
    }

    fn admits(self, value: &Value) -> bool {
        match (self, value) {
            (Kind::Null, Value::Null)
            | (Kind::Boolean, Value::Bool(_))
            | (Kind::Number, Value::Number(_))
            | (Kind::String, Value::String(_))
            | (Kind::Array, Value::Array(_))
            | (Kind::Object, Value::Object(_)) => true,
            // Since draft 6 a number with a zero fraction is an integer: `1.0` is one.
            (Kind::Integer, Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        }
    }
}

/// Why a schema could not be compiled: a keyword this checker does not take, or a malformed value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {problem}")]
pub struct CompileError {
    pub pointer: String,
    pub problem: String,
}

/// Keywords that only annotate.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "title",
    "description",
    "default",
    "format",
];

impl Schema {
    /// Compiles a schema document (a JSON object whose `$ref`s point into its own `$defs`).
    pub fn compile(document: &Value) -> Result<Schema, CompileError> {
        let names: Vec<&String> = match document.get("$defs") {
            Some(Value::Object(defs)) => defs.keys().collect(),
            Some(_) => return Err(problem("/$defs", "is not an object")),
            None => Vec::new(),
        };
        let compiler = Compiler { names: &names };
        let mut defs = Vec::with_capacity(names.len());
        for name in &names {
            let pointer = format!("/$defs/{}", escape(name));
            defs.push(compiler.node(&document["$defs"][name.as_str()], &pointer)?);
        }
        let root = compiler.node(document, "")?;
        let schema = Schema { root, defs };
        // A definition that reaches itself through references alone would recurse on every event.
        for (i, name) in names.iter().enumerate() {
            if schema.loops_back(i, i, &mut vec![false; names.len()]) {
                return Err(problem(
                    &format!("/$defs/{}", escape(name)),
                    "refers back to itself without descending into a member or an item",
                ));
            }
        }
        Ok(schema)
    }

    /// Whether definition `start` is reached again from definition `at` by references that check the
    /// same value (directly, or through `anyOf` / `oneOf`).
    fn loops_back(&self, start: usize, at: usize, seen: &mut Vec<bool>) -> bool {
        let Some(node) = self.defs.get(at) else {
            return false;
        };
        let mut next = Vec::new();
        let mut stack: Vec<&Node> = vec![node];
        while let Some(n) = stack.pop() {
            for check in &n.checks {
                match check {
                    Check::Ref(i) => next.push(*i),
                    Check::AnyOf(options) | Check::OneOf(options) => stack.extend(options.iter()),
                    _ => {}
                }
            }
        }
        next.into_iter().any(|i| {
            i == start
                || seen.get(i).is_some_and(|s| !s) && {
                    seen[i] = true;
                    self.loops_back(start, i, seen)
                }
        })
    }

    /// Every violation of `instance`, in the order the checks run (see `Check::rank`; an object's
    /// members in the instance's order, which is their keys' order).
    pub fn findings(&self, instance: &Value) -> Vec<Finding> {
        let mut out = Vec::new();
        self.check(&self.root, instance, &Path::Root, &mut Sink::Collect(&mut out));
        out
    }

    /// Whether `instance` is valid: stops at the first violation and words nothing.
    pub fn is_valid(&self, instance: &Value) -> bool {
        self.valid_under(&self.root, instance)
    }

    fn valid_under(&self, node: &Node, instance: &Value) -> bool {
        let mut sink = Sink::Any(false);
        self.check(node, instance, &Path::Root, &mut sink);
        matches!(sink, Sink::Any(false))
    }

    fn check(&self, node: &Node, value: &Value, path: &Path<'_>, sink: &mut Sink<'_>) {
        for check in &node.checks {
            if sink.done() {
                return;
            }
            match check {
                Check::Ref(i) => {
                    if let Some(target) = self.defs.get(*i) {
                        self.check(target, value, path, sink);
                    }
                }
                Check::Closed(props, _) | Check::Properties(props) => {
                    let Value::Object(members) = value else { continue };
                    let mut unexpected = Vec::new();
                    // Both are sorted by name (a serde_json map is; `props` see `Compiler::properties`):
                    // one walk along the two finds each member's schema.
                    let mut declared = props.iter().peekable();
                    for (key, member) in members {
                        while declared
                            .next_if(|(name, _)| name.as_str() < key.as_str())
                            .is_some()
                        {}
                        match declared.next_if(|(name, _)| name == key) {
                            Some((_, sub)) => self.check(sub, member, &Path::Key(path, key), sink),
                            None => unexpected.push(key),
                        }
                    }
                    if matches!(check, Check::Closed(..)) && !unexpected.is_empty() {
                        sink.report(path, || {
                            let mut m = String::from("Additional properties are not allowed (");
                            for (i, key) in unexpected.iter().enumerate() {
                                let sep = if i == 0 { "" } else { ", " };
                                let _ = write!(m, "{sep}'{key}'");
                            }
                            m.push_str(if unexpected.len() == 1 {
                                " was unexpected)"
                            } else {
                                " were unexpected)"
                            });
                            m
                        });
                    }
                    if let Check::Closed(_, Some(name)) = check
                        && !members.contains_key(name)
                    {
                        sink.missing(path, name);
                    }
                }
                Check::Required(names) => {
                    let Value::Object(members) = value else { continue };
                    for name in names {
                        if !members.contains_key(name) {
                            sink.missing(path, name);
                        }
                    }
                }
                Check::AnyOf(options) => {
                    if !options.iter().any(|o| self.valid_under(o, value)) {
                        sink.report(path, || {
                            format!(
                                "{value} is not valid under any of the schemas listed in the 'anyOf' keyword"
                            )
                        });
                    }
                }
                Check::OneOf(options) => {
                    match options.iter().filter(|o| self.valid_under(o, value)).take(2).count() {
                        1 => {}
                        0 => sink.report(path, || {
                            format!("{value} is not valid under any of the schemas listed in the 'oneOf' keyword")
                        }),
                        _ => sink.report(path, || {
                            format!("{value} is valid under more than one of the schemas listed in the 'oneOf' keyword")
                        }),
                    }
                }
                Check::Const(expected) => {
                    if !same(value, expected) {
                        sink.report(path, || format!("{expected} was expected"));
                    }
                }
                Check::Enum(options, texts) => {
                    let found = match (value, texts) {
                        (Value::String(s), Some(texts)) => {
                            texts.binary_search_by(|t| t.as_str().cmp(s)).is_ok()
                        }
                        (_, Some(_)) => false,
                        (_, None) => options.iter().any(|o| same(value, o)),
                    };
                    if !found {
                        sink.report(path, || enum_message(value, options));
                    }
                }
                Check::Items(sub) => {
                    if let Value::Array(items) = value {
                        for (i, item) in items.iter().enumerate() {
                            self.check(sub, item, &Path::Index(path, i), sink);
                        }
                    }
                }
                Check::MinItems(limit) => {
                    if let Value::Array(items) = value
                        && (items.len() as u64) < *limit
                    {
                        sink.report(path, || {
                            format!("{value} has less than {limit} item{}", plural(*limit))
                        });
                    }
                }
                Check::MaxItems(limit) => {
                    if let Value::Array(items) = value
                        && (items.len() as u64) > *limit
                    {
                        sink.report(path, || {
                            format!("{value} has more than {limit} item{}", plural(*limit))
                        });
                    }
                }
                Check::MinLength(limit) => {
                    if let Value::String(s) = value
                        && (s.chars().count() as u64) < *limit
                    {
                        sink.report(path, || {
                            format!("{value} is shorter than {limit} character{}", plural(*limit))
                        });
                    }
                }
                Check::MaxLength(limit) => {
                    if let Value::String(s) = value
                        && (s.chars().count() as u64) > *limit
                    {
                        sink.report(path, || {
                            format!("{value} is longer than {limit} character{}", plural(*limit))
                        });
                    }
                }
                Check::Minimum(limit) => {
                    if let Value::Number(n) = value
                        && compare(n, limit) == Ordering::Less
                    {
                        sink.report(path, || format!("{value} is less than the minimum of {limit}"));
                    }
                }
                Check::Maximum(limit) => {
                    if let Value::Number(n) = value
                        && compare(n, limit) == Ordering::Greater
                    {
                        sink.report(path, || format!("{value} is greater than the maximum of {limit}"));
                    }
                }
                Check::Pattern(matcher, source) => {
                    if let Value::String(s) = value
                        && !matcher.is_match(s)
                    {
                        sink.report(path, || format!("{value} does not match \"{source}\""));
                    }
                }
                Check::Type(kinds) => {
                    if !kinds.iter().any(|k| k.admits(value)) {
                        sink.report(path, || match kinds.as_slice() {
                            [kind] => format!("{value} is not of type \"{}\"", kind.name()),
                            _ => {
                                let names: Vec<String> =
                                    kinds.iter().map(|k| format!("\"{}\"", k.name())).collect();
                                format!("{value} is not of types {}", names.join(", "))
                            }
                        });
                    }
                }
            }
        }
    }
}

/// A `pattern`. Ours are identifiers, `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`: an anchored row of character
/// classes, each repeated, which [`Classes`] matches by walking the text once (about 5 µs of an event's
/// 9 µs went to matching them with `regex-lite`'s general engine). Any other pattern is left to
/// `regex-lite`, whose syntax is not quite ECMA-262's (which JSON Schema names): its `\s` is ASCII only and
/// its `.` matches `\r`, U+2028 and U+2029. Our schemas have no such pattern; one would want a test.
#[derive(Debug)]
pub(crate) enum Matcher {
    Classes(Classes),
    Regex(regex_lite::Regex),
}

impl Matcher {
    fn new(source: &str) -> Result<Matcher, String> {
        match Classes::parse(source) {
            Some(classes) => Ok(Matcher::Classes(classes)),
            None => regex_lite::Regex::new(source)
                .map(Matcher::Regex)
                .map_err(|e| e.to_string()),
        }
    }

    pub(crate) fn is_match(&self, text: &str) -> bool {
        match self {
            Matcher::Classes(c) => c.is_match(text),
            Matcher::Regex(r) => r.is_match(text),
        }
    }
}

/// `^` then atoms then `$`, where an atom is one character or a bracket class of characters and ranges
/// (no negation, no escapes: anything else is not parsed here), repeated once, `?`, `*`, `+`, `{n}` or
/// `{m,n}`, with at most 128 states in all (the identifier pattern has 67).
#[derive(Debug)]
pub(crate) struct Classes {
    atoms: Vec<Atom>,
    /// Per atom (and one past the last), the bit of its first state: an atom has a state per count
    /// from 0 to its maximum (to its minimum when it has none).
    first_bit: Vec<usize>,
    /// Per bit, its (atom, count).
    states: Vec<(usize, usize)>,
}

#[derive(Debug)]
struct Atom {
    /// Inclusive ranges of characters.
    ranges: Vec<(char, char)>,
    min: usize,
    max: Option<usize>,
}

impl Atom {
    fn admits(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi)
    }
}

impl Classes {
    pub(crate) fn parse(source: &str) -> Option<Classes> {
        let inner = source.strip_prefix('^')?.strip_suffix('$')?;
        let chars: Vec<char> = inner.chars().collect();
        let mut atoms = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let ranges = match chars[i] {
                '[' => {
                    let close = i + 1 + chars[i + 1..].iter().position(|&c| c == ']')?;
                    let class = &chars[i + 1..close];
                    if class.is_empty() || class[0] == '^' || class.contains(&'\\') || class.contains(&'[') {
                        return None;
                    }
                    let mut ranges = Vec::new();
                    let mut j = 0;
                    while j < class.len() {
                        // `a-z` is a range; a `-` first or last is itself.
                        if j + 2 < class.len() && class[j + 1] == '-' {
                            if class[j] > class[j + 2] {
                                return None;
                            }
                            ranges.push((class[j], class[j + 2]));
                            j += 3;
                        } else {
                            ranges.push((class[j], class[j]));
                            j += 1;
                        }
                    }
                    i = close + 1;
                    ranges
                }
                c if c.is_alphanumeric() || c == '_' || c == '-' || c == ' ' => {
                    i += 1;
                    vec![(c, c)]
                }
                _ => return None,
            };
            let (min, max) = match chars.get(i) {
                Some('?') => (0, Some(1)),
                Some('*') => (0, None),
                Some('+') => (1, None),
                Some('{') => {
                    let close = i + chars[i..].iter().position(|&c| c == '}')?;
                    let body: String = chars[i + 1..close].iter().collect();
                    let (m, n) = match body.split_once(',') {
                        Some((m, n)) => (count_of(m)?, Some(count_of(n)?)),
                        None => {
                            let n = count_of(&body)?;
                            (n, Some(n))
                        }
                    };
                    if n.is_some_and(|n| n < m) {
                        return None;
                    }
                    i = close;
                    (m, n)
                }
                _ => {
                    atoms.push(Atom {
                        ranges,
                        min: 1,
                        max: Some(1),
                    });
                    continue;
                }
            };
            i += 1;
            atoms.push(Atom { ranges, min, max });
        }
        let mut first_bit = Vec::with_capacity(atoms.len() + 1);
        let mut states = Vec::new();
        for (i, atom) in atoms.iter().enumerate() {
            first_bit.push(states.len());
            states.extend((0..=atom.max.unwrap_or(atom.min)).map(|k| (i, k)));
        }
        first_bit.push(states.len());
        states.push((atoms.len(), 0));
        // The states are one 128-bit set; a longer pattern is left to the general engine.
        (states.len() <= 128).then_some(Classes {
            atoms,
            first_bit,
            states,
        })
    }

    /// Every way the text so far can have been matched is a pair (atom, times it has been repeated),
    /// one bit of a set (see [`Classes::bit`]); each character moves every pair at once, so nothing is
    /// tried twice and nothing is allocated.
    pub(crate) fn is_match(&self, text: &str) -> bool {
        let mut now = self.settle(0, 0, 0);
        for c in text.chars() {
            let mut next = 0u128;
            let mut left = now;
            while left != 0 {
                let bit = left.trailing_zeros() as usize;
                left &= left - 1;
                let (i, k) = self.states[bit];
                if let Some(atom) = self.atoms.get(i)
                    && atom.max.is_none_or(|max| k < max)
                    && atom.admits(c)
                {
                    // An unbounded atom repeated past its minimum is one state whatever the count.
                    let k = if atom.max.is_none() {
                        (k + 1).min(atom.min)
                    } else {
                        k + 1
                    };
                    next = self.settle(next, i, k);
                }
            }
            if next == 0 {
                return false;
            }
            now = next;
        }
        now & (1 << self.bit(self.atoms.len(), 0)) != 0
    }

    /// Adds a state and those it leads to without a character: past an atom repeated enough.
    fn settle(&self, mut states: u128, mut i: usize, mut k: usize) -> u128 {
        loop {
            let bit = 1u128 << self.bit(i, k);
            if states & bit != 0 {
                return states;
            }
            states |= bit;
            match self.atoms.get(i) {
                Some(atom) if k >= atom.min => {
                    i += 1;
                    k = 0;
                }
                _ => return states,
            }
        }
    }

    /// The bit of state (atom `i`, repeated `k` times); the state past the last atom is the last bit.
    fn bit(&self, i: usize, k: usize) -> usize {
        self.first_bit[i] + k
    }
}

/// A repetition count: digits only, and small enough for the 128 states (a larger one is not a row of
/// classes we match, and must not size a list of states).
fn count_of(digits: &str) -> Option<usize> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n: &usize| n < 128)
}

/// Where the findings go: all of them, worded, or only whether there is one.
enum Sink<'a> {
    Collect(&'a mut Vec<Finding>),
    Any(bool),
}

impl Sink<'_> {
    fn done(&self) -> bool {
        matches!(self, Sink::Any(true))
    }

    fn report(&mut self, path: &Path<'_>, message: impl FnOnce() -> String) {
        self.push(path, message, None);
    }

    /// A `required` member that is not there (the name written as JSON, as the general validator did).
    fn missing(&mut self, path: &Path<'_>, name: &str) {
        self.push(
            path,
            || format!("{} is a required property", Value::from(name)),
            Some(name),
        );
    }

    fn push(&mut self, path: &Path<'_>, message: impl FnOnce() -> String, missing: Option<&str>) {
        match self {
            Sink::Collect(out) => out.push(Finding {
                pointer: path.pointer(),
                message: message(),
                missing: missing.map(str::to_owned),
            }),
            Sink::Any(found) => *found = true,
        }
    }
}

/// The place being checked, as a chain up to the document: the pointer is written only for a finding.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn pointer(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Key(parent, key) => format!("{}/{}", parent.pointer(), escape(key)),
            Path::Index(parent, i) => format!("{}/{i}", parent.pointer()),
        }
    }
}

/// A JSON pointer's escaping of one reference token (RFC 6901): `~` as `~0`, `/` as `~1`.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The general validator's wording: every option when there are at most three, else the first two and
/// how many others.
fn enum_message(value: &Value, options: &[Value]) -> String {
    let mut m = format!("{value} is not one of ");
    let shown = if options.len() <= 3 { options.len() } else { 2 };
    for (i, option) in options.iter().take(shown).enumerate() {
        let sep = match i {
            0 => "",
            _ if options.len() <= 3 && i == options.len() - 1 => " or ",
            _ => ", ",
        };
        let _ = write!(m, "{sep}{option}");
    }
    if options.len() > 3 {
        let _ = write!(m, " or {} other candidates", options.len() - shown);
    }
    m
}

/// JSON equality as JSON Schema means it: numbers by value (`1` and `1.0` are the same), objects whatever
/// the order of their members.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare(x, y) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Compares two JSON numbers exactly, whether each is held as a signed, an unsigned or a float. (Every
/// number is one of the three: serde_json's `arbitrary_precision`, under which `as_f64` could fail, is not
/// enabled.)
fn compare(a: &Number, b: &Number) -> Ordering {
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(x), None) => compare_float(b.as_f64().unwrap_or(0.0), x).reverse(),
        (None, Some(y)) => compare_float(a.as_f64().unwrap_or(0.0), y),
        (None, None) => {
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

fn integer(n: &Number) -> Option<i128> {
    n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from))
}

/// A float against an integer without rounding the integer: JSON floats are finite, and every integer a
/// JSON number holds as one lies within ±2^64.
fn compare_float(f: f64, i: i128) -> Ordering {
    const BOUND: f64 = 18_446_744_073_709_551_616.0; // 2^64
    if f >= BOUND {
        return Ordering::Greater;
    }
    if f <= -BOUND {
        return Ordering::Less;
    }
    let whole = f.trunc();
    // Exact: |whole| < 2^64 fits an i128.
    match (whole as i128).cmp(&i) {
        Ordering::Equal if f > whole => Ordering::Greater,
        Ordering::Equal if f < whole => Ordering::Less,
        other => other,
    }
}

struct Compiler<'a> {
    names: &'a [&'a String],
}

fn problem(pointer: &str, what: &str) -> CompileError {
    CompileError {
        pointer: pointer.to_owned(),
        problem: what.to_owned(),
    }
}

impl Compiler<'_> {
    fn node(&self, schema: &Value, at: &str) -> Result<Node, CompileError> {
        let Value::Object(keywords) = schema else {
            return Err(problem(at, "a schema here is not an object"));
        };
        let closed = matches!(keywords.get("additionalProperties"), Some(Value::Bool(false)));
        // One required name beside `additionalProperties: false` is checked with the members.
        // (The general validator fused it only when the name is one of `properties`.)
        let required_one = match (keywords.get("required"), keywords.get("properties")) {
            (Some(Value::Array(names)), Some(Value::Object(props))) if closed && names.len() == 1 => names[0]
                .as_str()
                .filter(|name| props.contains_key(*name))
                .map(str::to_owned),
            _ => None,
        };
        let mut checks = Vec::new();
        for (keyword, value) in keywords {
            let here = format!("{at}/{}", escape(keyword));
            let check = match keyword.as_str() {
                k if ANNOTATIONS.contains(&k) => continue,
                "$ref" => Check::Ref(self.reference(value, &here)?),
                "additionalProperties" => match value {
                    Value::Bool(false) => Check::Closed(
                        self.properties(keywords.get("properties"), at)?,
                        required_one.clone(),
                    ),
                    Value::Bool(true) => continue,
                    _ => return Err(problem(&here, "only `false` is taken")),
                },
                "properties" if closed => continue,
                "required" if required_one.is_some() => continue,
                "properties" => Check::Properties(self.properties(Some(value), at)?),
                "required" => Check::Required(
                    value
                        .as_array()
                        .and_then(|names| names.iter().map(|n| n.as_str().map(str::to_owned)).collect())
                        .ok_or_else(|| problem(&here, "is not a list of names"))?,
                ),
                "anyOf" => Check::AnyOf(self.list(value, &here)?),
                "oneOf" => Check::OneOf(self.list(value, &here)?),
                "const" => Check::Const(value.clone()),
                "enum" => {
                    let options = value
                        .as_array()
                        .cloned()
                        .ok_or_else(|| problem(&here, "is not a list"))?;
                    let texts: Option<Vec<String>> =
                        options.iter().map(|o| o.as_str().map(str::to_owned)).collect();
                    Check::Enum(
                        options,
                        texts.map(|mut t| {
                            t.sort();
                            t
                        }),
                    )
                }
                "items" => Check::Items(Box::new(self.node(value, &here)?)),
                "minItems" => Check::MinItems(count(value, &here)?),
                "maxItems" => Check::MaxItems(count(value, &here)?),
                "minLength" => Check::MinLength(count(value, &here)?),
                "maxLength" => Check::MaxLength(count(value, &here)?),
                "minimum" => Check::Minimum(number(value, &here)?),
                "maximum" => Check::Maximum(number(value, &here)?),
                "pattern" => {
                    let source = value.as_str().ok_or_else(|| problem(&here, "is not text"))?;
                    let matcher = Matcher::new(source).map_err(|e| problem(&here, &e))?;
                    Check::Pattern(matcher, source.to_owned())
                }
                "type" => Check::Type(
                    match value {
                        Value::String(name) => Kind::parse(name).map(|k| vec![k]),
                        Value::Array(names) if !names.is_empty() => names
                            .iter()
                            .map(|n| n.as_str().and_then(Kind::parse))
                            .collect::<Option<Vec<Kind>>>()
                            .map(|mut kinds| {
                                kinds.sort();
                                kinds.dedup();
                                kinds
                            }),
                        _ => None,
                    }
                    .ok_or_else(|| problem(&here, "is not a type name or a list of them"))?,
                ),
                other => return Err(problem(at, &format!("keyword `{other}` is not taken"))),
            };
            checks.push(check);
        }
        // Cheap checks first, as the general validator ran them: its findings came in this order.
        checks.sort_by_key(Check::rank);
        Ok(Node { checks })
    }

    fn reference(&self, value: &Value, at: &str) -> Result<usize, CompileError> {
        value
            .as_str()
            .and_then(|r| r.strip_prefix("#/$defs/"))
            .and_then(|name| self.names.iter().position(|n| n.as_str() == name))
            .ok_or_else(|| {
                problem(
                    at,
                    "only a reference to `#/$defs/<name>` of this document is taken",
                )
            })
    }

    fn properties(&self, value: Option<&Value>, at: &str) -> Result<Vec<(String, Node)>, CompileError> {
        let Some(value) = value else { return Ok(Vec::new()) };
        let members: &Map<String, Value> = value
            .as_object()
            .ok_or_else(|| problem(&format!("{at}/properties"), "is not an object"))?;
        let mut props = members
            .iter()
            .map(|(name, schema)| {
                let here = format!("{at}/properties/{}", escape(name));
                Ok((name.clone(), self.node(schema, &here)?))
            })
            .collect::<Result<Vec<_>, CompileError>>()?;
        // Walked along an object's members, which come sorted (see `Schema::check`).
        props.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(props)
    }

    fn list(&self, value: &Value, at: &str) -> Result<Vec<Node>, CompileError> {
        let options = value.as_array().ok_or_else(|| problem(at, "is not a list"))?;
        options
            .iter()
            .enumerate()
            .map(|(i, o)| self.node(o, &format!("{at}/{i}")))
            .collect()
    }
}

fn count(value: &Value, at: &str) -> Result<u64, CompileError> {
    value.as_u64().ok_or_else(|| problem(at, "is not a count"))
}

fn number(value: &Value, at: &str) -> Result<Number, CompileError> {
    match value {
        Value::Number(n) => Ok(n.clone()),
        _ => Err(problem(at, "is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn findings(schema: Value, instance: Value) -> Vec<String> {
        Schema::compile(&schema)
            .unwrap()
            .findings(&instance)
            .into_iter()
            .map(|f| f.to_string())
            .collect()
    }

    /// An object's members are walked along its sorted properties (`Schema::check`), and findings come in
    /// the members' order: both take a serde_json map to iterate sorted by key, which it does unless its
    /// `preserve_order` feature is on.
    #[test]
    fn an_object_iterates_its_members_sorted_by_key() {
        let object: Map<String, Value> = [("b", 1), ("a", 2), ("c", 3)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::from(v)))
            .collect();
        assert_eq!(object.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn numbers_compare_exactly_whatever_they_are_held_as() {
        let big = Number::from(9_007_199_254_740_993u64); // 2^53 + 1: no f64 holds it
        let f = |x: f64| Number::from_f64(x).unwrap();
        assert_eq!(compare(&f(9_007_199_254_740_992.0), &big), Ordering::Less);
        assert_eq!(compare(&big, &f(9_007_199_254_740_992.0)), Ordering::Greater);
        assert_eq!(compare(&f(1.0), &Number::from(1)), Ordering::Equal);
        assert_eq!(compare(&f(0.5), &Number::from(0)), Ordering::Greater);
        assert_eq!(compare(&f(-0.5), &Number::from(0)), Ordering::Less);
        assert_eq!(compare(&f(1e300), &Number::from(u64::MAX)), Ordering::Greater);
        assert_eq!(compare(&f(-1e300), &Number::from(i64::MIN)), Ordering::Less);
        assert_eq!(
            compare(&Number::from(-1), &Number::from(u64::MAX)),
            Ordering::Less
        );
    }

    #[test]
    fn a_keyword_it_does_not_take_is_refused_when_compiled() {
        let e = Schema::compile(&json!({"properties": {"a": {"type": "string", "uniqueItems": true}}}))
            .unwrap_err();
        assert_eq!(e.to_string(), "/properties/a: keyword `uniqueItems` is not taken");
        let e = Schema::compile(&json!({"$ref": "https://example.com/s.json"})).unwrap_err();
        assert_eq!(e.pointer, "/$ref");
        let e = Schema::compile(&json!({"type": ["string", "date"]})).unwrap_err();
        assert_eq!(e.pointer, "/type");
        let looping = json!({"$defs": {"A": {"anyOf": [{"$ref": "#/$defs/B"}, {"type": "null"}]}, "B": {"$ref": "#/$defs/A"}}});
        assert_eq!(Schema::compile(&looping).unwrap_err().pointer, "/$defs/A");
        // Through a member it is a tree, not a loop.
        let tree = json!({"$defs": {"T": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/T"}}}}}, "$ref": "#/$defs/T"});
        let tree = Schema::compile(&tree).unwrap();
        assert!(tree.is_valid(&json!({"kids": [{"kids": []}]})));
        assert!(!tree.is_valid(&json!({"kids": [{"kids": 1}]})));
        assert!(matches!(
            Matcher::new("^a{4294967295}$"),
            Ok(Matcher::Regex(_)) | Err(_)
        ));
        assert!(matches!(Matcher::new("^a{+3}$"), Ok(Matcher::Regex(_)) | Err(_)));
    }

    #[test]
    fn findings_name_their_place_and_word_the_violation() {
        let schema = json!({
            "$defs": {"Id": {"type": "string", "minLength": 1, "maxLength": 3, "pattern": "^[a-z]+$"}},
            "type": "object",
            "additionalProperties": false,
            "required": ["id", "n/m"],
            "properties": {
                "id": {"$ref": "#/$defs/Id"},
                "n/m": {"type": "integer", "minimum": 1, "maximum": 9},
                "tags": {"type": "array", "items": {"enum": ["a", "b", "c", "d"]}, "maxItems": 1},
                "note": {"type": ["string", "null"]},
            }
        });
        assert_eq!(
            findings(
                schema.clone(),
                json!({"id": "ABCD", "n/m": 1.5, "tags": ["e", "a"], "x": 1, "y": 2})
            ),
            [
                "/id: \"ABCD\" is longer than 3 characters",
                "/id: \"ABCD\" does not match \"^[a-z]+$\"",
                "/n~1m: 1.5 is not of type \"integer\"",
                "/tags: [\"e\",\"a\"] has more than 1 item",
                "/tags/0: \"e\" is not one of \"a\", \"b\" or 2 other candidates",
                ": Additional properties are not allowed ('x', 'y' were unexpected)",
            ]
        );
        assert_eq!(
            findings(schema.clone(), json!({"id": ""})),
            [
                ": \"n/m\" is a required property",
                "/id: \"\" is shorter than 1 character",
                "/id: \"\" does not match \"^[a-z]+$\"",
            ]
        );
        assert_eq!(
            findings(schema.clone(), json!([])),
            [": [] is not of type \"object\""]
        );
        assert_eq!(
            findings(schema.clone(), json!({"id": "ab", "n/m": 1, "note": 5})),
            ["/note: 5 is not of types \"null\", \"string\""]
        );
        assert!(findings(schema.clone(), json!({"id": "ab", "n/m": 9.0})).is_empty());
        let compiled = Schema::compile(&schema).unwrap();
        assert!(compiled.is_valid(&json!({"id": "ab", "n/m": 9})));
        assert!(!compiled.is_valid(&json!({"id": "ab", "n/m": 10})));
    }

    /// The row-of-classes matcher against `regex-lite` on every short text over an alphabet that hits
    /// each class and its edges, and on identifiers around the length limit.
    #[test]
    fn a_row_of_classes_matches_as_a_regular_expression_does() {
        let patterns = [
            "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
            "^[a-c]*[b-d]{2,3}x?$",
            "^a+b*$",
            "^[0-9]{2}-[0-9]{1,2}$",
            "^[A-Z][a-z_ -]{0,3}$",
            "^$",
        ];
        let alphabet = [
            'a', 'b', 'd', 'x', 'A', 'Z', '0', '9', '-', '_', '.', ' ', 'é', '/',
        ];
        let mut texts = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            texts.extend(last.iter().cloned());
        }
        for n in [62, 63, 64, 65] {
            texts.push("a".repeat(n));
            texts.push(format!("A{}", "._-9".repeat(n / 4)));
            texts.push(format!("{}\n", "a".repeat(n)));
        }
        for pattern in patterns {
            let Matcher::Classes(ours) = Matcher::new(pattern).unwrap() else {
                panic!("{pattern} is a row of classes")
            };
            let regex = regex_lite::Regex::new(pattern).unwrap();
            for t in &texts {
                assert_eq!(ours.is_match(t), regex.is_match(t), "{pattern} on {t:?}");
            }
        }
        // Anything else is left to the general engine.
        for pattern in [
            "^a|b$",
            "^(ab)+$",
            "^[^a]$",
            "^[\\d]$",
            "^a.$",
            "a+",
            "^a{2,}$",
            "^a{0,64}b{0,64}$",
        ] {
            assert!(
                matches!(Matcher::new(pattern), Ok(Matcher::Regex(_))),
                "{pattern}"
            );
        }
    }

    #[test]
    fn one_of_refuses_none_and_more_than_one() {
        let schema = json!({"oneOf": [{"type": "integer"}, {"type": "number"}], "anyOf": [{"const": 1}, {"const": 2.5}]});
        assert!(findings(schema.clone(), json!(2.5)).is_empty());
        assert_eq!(
            findings(schema.clone(), json!(1)),
            [": 1 is valid under more than one of the schemas listed in the 'oneOf' keyword"]
        );
        assert_eq!(
            findings(schema, json!("x")),
            [
                ": \"x\" is not valid under any of the schemas listed in the 'anyOf' keyword",
                ": \"x\" is not valid under any of the schemas listed in the 'oneOf' keyword",
            ]
        );
    }
}
