//! Field-path encryption: only the values at configured paths of a message
//! body are sealed (`--encrypt-field body.text`, `body.*.text`); the rest
//! of the body stays in the clear, so it can be read, indexed and grepped.
//!
//! A sealed value is replaced in the stored body by `{"_enc":"<hex>"}`, and
//! the message records where it sealed (RFC 6901 pointers such as
//! `/items/0/text`). Opening visits exactly those pointers, so a client that
//! sends its own `{"_enc":…}` elsewhere gets it back as data, and one sent
//! at a sealed path is itself sealed.
//!
//! Values that are not sealed keep their bytes. The objects and arrays on
//! the way to a sealed value are written back compactly (their members in
//! the original order, without the whitespace between them).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Patterns accepted at most, and steps per pattern.
pub const PATTERNS_MAX: usize = 32;
pub const STEPS_MAX: usize = 16;

/// One step of a pattern: a member name (or array index), or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Any,
}

/// The configured paths, parsed. Empty means whole-body encryption.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPaths {
    patterns: Vec<String>,
    steps: Vec<Vec<Step>>,
}

impl FieldPaths {
    /// Parses `body.a.*.b` patterns; every one starts at the body.
    pub fn parse(patterns: &[String]) -> Result<FieldPaths, String> {
        if patterns.len() > PATTERNS_MAX {
            return Err(format!("at most {PATTERNS_MAX} --encrypt-field paths"));
        }
        let parsed = patterns.iter().map(|pattern| parse_pattern(pattern));
        Ok(FieldPaths {
            patterns: patterns.to_vec(),
            steps: parsed.collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The paths as configured.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

fn parse_pattern(pattern: &str) -> Result<Vec<Step>, String> {
    let invalid = |why: &str| format!("--encrypt-field {pattern:?}: {why}");
    let rest = pattern
        .strip_prefix("body.")
        .ok_or_else(|| invalid("a path starts with `body.`"))?;
    let steps: Vec<Step> = rest
        .split('.')
        .map(|step| match step {
            "" => Err(invalid("empty step")),
            "*" => Ok(Step::Any),
            name => Ok(Step::Key(name.to_owned())),
        })
        .collect::<Result<_, _>>()?;
    if steps.len() > STEPS_MAX {
        return Err(invalid(&format!("more than {STEPS_MAX} steps")));
    }
    Ok(steps)
}

/// Why a body's fields could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    /// The stored body does not have the shape its pointers describe.
    Shape(String),
    /// A sealed value did not open.
    Open,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Shape(why) => write!(f, "sealed fields: {why}"),
            FieldError::Open => f.write_str("a sealed field did not open"),
        }
    }
}

/// A stored body with sealed values, and the pointers where they are.
pub type SealedFields = (Box<RawValue>, Vec<String>);

/// A body with the values at `paths` sealed by `seal(pointer, value)`
/// (which returns the hex to store), and the pointers sealed; `None` when
/// no path matched, so the body is stored as it came.
pub fn seal(
    body: &RawValue,
    paths: &FieldPaths,
    seal: &mut dyn FnMut(&str, &str) -> String,
) -> Result<Option<SealedFields>, FieldError> {
    let patterns: Vec<&[Step]> = paths.steps.iter().map(Vec::as_slice).collect();
    let mut sealed = Vec::new();
    let mut leaf = |pointer: &str, value: &str| -> Result<String, FieldError> {
        sealed.push(pointer.to_owned());
        let hex = seal(pointer, value);
        Ok(format!(r#"{{"_enc":"{hex}"}}"#))
    };
    let out = rewrite(body, &patterns, &mut leaf)?;
    if sealed.is_empty() {
        return Ok(None);
    }
    Ok(Some((out, sealed)))
}

/// The stored `body` with the values at `pointers` opened by
/// `open(pointer, hex)`, which returns the original value's JSON.
pub fn open(
    body: &RawValue,
    pointers: &[String],
    open: &mut dyn FnMut(&str, &str) -> Result<String, FieldError>,
) -> Result<Box<RawValue>, FieldError> {
    let concrete: Vec<Vec<Step>> = pointers.iter().map(|p| pointer_steps(p)).collect();
    let patterns: Vec<&[Step]> = concrete.iter().map(Vec::as_slice).collect();
    let mut leaf = |pointer: &str, value: &str| -> Result<String, FieldError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Enc<'a> {
            #[serde(borrow, rename = "_enc")]
            enc: Cow<'a, str>,
        }
        let enc: Enc = serde_json::from_str(value)
            .map_err(|_| FieldError::Shape(format!("{pointer} is not a sealed value")))?;
        open(pointer, &enc.enc)
    };
    rewrite(body, &patterns, &mut leaf)
}

/// `body` with `leaf` applied wherever one of `patterns` ends.
fn rewrite(
    body: &RawValue,
    patterns: &[&[Step]],
    leaf: &mut Leaf<'_>,
) -> Result<Box<RawValue>, FieldError> {
    let mut walker = Walker {
        pointer: String::new(),
        leaf,
        out: String::with_capacity(body.get().len() + 64),
    };
    walker.value(body.get(), patterns)?;
    RawValue::from_string(walker.out).map_err(shape)
}

/// Steps of an RFC 6901 pointer (`/a/0/b~1c`), all literal.
fn pointer_steps(pointer: &str) -> Vec<Step> {
    pointer
        .split('/')
        .skip(1)
        .map(|step| Step::Key(step.replace("~1", "/").replace("~0", "~")))
        .collect()
}

type Leaf<'l> = dyn FnMut(&str, &str) -> Result<String, FieldError> + 'l;

/// Copies a JSON value to `out`, applying `leaf` where a pattern ends;
/// `pointer` is where in the body it is.
struct Walker<'w, 'l> {
    pointer: String,
    leaf: &'w mut Leaf<'l>,
    out: String,
}

impl Walker<'_, '_> {
    fn value(&mut self, value: &str, patterns: &[&[Step]]) -> Result<(), FieldError> {
        if patterns.iter().any(|pattern| pattern.is_empty()) {
            let replaced = (self.leaf)(&self.pointer, value.trim())?;
            self.out.push_str(&replaced);
            return Ok(());
        }
        match value.trim_start().as_bytes().first() {
            _ if patterns.is_empty() => self.out.push_str(value),
            Some(b'{') => self.object(value, patterns)?,
            Some(b'[') => self.array(value, patterns)?,
            _ => self.out.push_str(value),
        }
        Ok(())
    }

    fn object(&mut self, value: &str, patterns: &[&[Step]]) -> Result<(), FieldError> {
        self.out.push('{');
        for (at, (name, member)) in deserialize_members(value)?.into_iter().enumerate() {
            if at > 0 {
                self.out.push(',');
            }
            self.out
                .push_str(&serde_json::to_string(&name).map_err(shape)?);
            self.out.push(':');
            self.member(&name, member, patterns)?;
        }
        self.out.push('}');
        Ok(())
    }

    fn array(&mut self, value: &str, patterns: &[&[Step]]) -> Result<(), FieldError> {
        let items: Vec<&RawValue> = serde_json::from_str(value).map_err(shape)?;
        self.out.push('[');
        for (index, item) in items.into_iter().enumerate() {
            if index > 0 {
                self.out.push(',');
            }
            self.member(&index.to_string(), item, patterns)?;
        }
        self.out.push(']');
        Ok(())
    }

    /// The member (or item) `name`, with the patterns that go below it.
    fn member(
        &mut self,
        name: &str,
        value: &RawValue,
        patterns: &[&[Step]],
    ) -> Result<(), FieldError> {
        let below: Vec<&[Step]> = patterns
            .iter()
            .filter(|pattern| match &pattern[0] {
                Step::Any => true,
                Step::Key(key) => key == name,
            })
            .map(|pattern| &pattern[1..])
            .collect();
        let depth = self.pointer.len();
        self.pointer.push('/');
        self.pointer
            .push_str(&name.replace('~', "~0").replace('/', "~1"));
        let written = self.value(value.get(), &below);
        self.pointer.truncate(depth);
        written
    }
}

fn shape(err: serde_json::Error) -> FieldError {
    FieldError::Shape(err.to_string())
}

/// An object's members in their order, values as their raw JSON.
fn deserialize_members(value: &str) -> Result<Vec<(String, &RawValue)>, FieldError> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(String, &'de RawValue)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                members.push(member);
            }
            Ok(members)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(value);
    deserializer.deserialize_map(Members).map_err(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn paths(patterns: &[&str]) -> FieldPaths {
        FieldPaths::parse(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    /// "Seals" by hex-encoding the pointer and value, so tests can see both.
    fn fake_seal(pointer: &str, value: &str) -> String {
        format!("{pointer}|{value}")
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn fake_open(pointer: &str, hex: &str) -> Result<String, FieldError> {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let text = String::from_utf8(bytes).unwrap();
        let (sealed_at, value) = text.split_once('|').unwrap();
        if sealed_at != pointer {
            return Err(FieldError::Open);
        }
        Ok(value.to_owned())
    }

    #[test]
    fn seals_only_the_paths_and_opens_back() {
        let body = raw(r#"{"text": "secret", "lang":"en", "items":[{"text":"a"},{"n":1}]}"#);
        let paths = paths(&["body.text", "body.items.*.text"]);
        let (stored, pointers) = seal(&body, &paths, &mut fake_seal).unwrap().unwrap();
        assert_eq!(pointers, ["/text", "/items/0/text"]);
        assert!(!stored.get().contains("secret"));
        assert!(stored.get().contains(r#""lang":"en""#));
        assert!(stored.get().contains(r#""items":[{"text":{"_enc":""#));
        let opened = open(&stored, &pointers, &mut fake_open).unwrap();
        assert_eq!(
            opened.get(),
            r#"{"text":"secret","lang":"en","items":[{"text":"a"},{"n":1}]}"#
        );
    }

    #[test]
    fn bodies_without_the_paths_are_left_alone() {
        let paths = paths(&["body.text"]);
        for body in [r#""just a string""#, r#"{"other":1}"#, "[1,2]", "null"] {
            assert!(seal(&raw(body), &paths, &mut fake_seal).unwrap().is_none());
        }
    }

    #[test]
    fn a_client_enc_object_elsewhere_is_data() {
        let body = raw(r#"{"text":"x","note":{"_enc":"00"}}"#);
        let (stored, pointers) = seal(&body, &paths(&["body.text"]), &mut fake_seal)
            .unwrap()
            .unwrap();
        let opened = open(&stored, &pointers, &mut fake_open).unwrap();
        assert_eq!(opened.get(), r#"{"text":"x","note":{"_enc":"00"}}"#);
    }

    #[test]
    fn odd_member_names_round_trip_through_pointers() {
        let body = raw(r#"{"a/b":{"c~d":"v"},"é\"q":"w"}"#);
        let paths = paths(&["body.*.*", "body.é\"q"]);
        let (stored, pointers) = seal(&body, &paths, &mut fake_seal).unwrap().unwrap();
        assert_eq!(pointers, ["/a~1b/c~0d", "/é\"q"]);
        let opened = open(&stored, &pointers, &mut fake_open).unwrap();
        assert_eq!(opened.get(), r#"{"a/b":{"c~d":"v"},"é\"q":"w"}"#);
    }

    #[test]
    fn moved_or_damaged_values_do_not_open() {
        let body = raw(r#"{"a":"1","b":"2"}"#);
        let (stored, _) = seal(&body, &paths(&["body.a"]), &mut fake_seal)
            .unwrap()
            .unwrap();
        let moved = stored.get().replace(r#""a":"#, r#""b":"#);
        let err = open(&raw(&moved), &["/b".into()], &mut fake_open).unwrap_err();
        assert_eq!(err, FieldError::Open);
        let err = open(&raw(r#"{"a":"plain"}"#), &["/a".into()], &mut fake_open).unwrap_err();
        assert!(matches!(err, FieldError::Shape(_)));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["text", "body.", "body..x", "body"] {
            assert!(FieldPaths::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
        let long = format!("body{}", ".x".repeat(STEPS_MAX + 1));
        assert!(FieldPaths::parse(&[long]).is_err());
        assert!(FieldPaths::parse(&vec!["body.x".to_string(); PATTERNS_MAX + 1]).is_err());
    }
}
