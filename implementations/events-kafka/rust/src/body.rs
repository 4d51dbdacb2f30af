//! The request body: a JSON object whose `reason` is a string; other members
//! are ignored. Written by hand (rather than `#[derive(Deserialize)]`) for two
//! reasons: serde's derived struct impls also accept a JSON array (`["x"]`),
//! which the contract rejects, and this borrows `reason` from the request
//! bytes when it has no escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

pub struct FireBody<'a> {
    pub reason: Cow<'a, str>,
}

/// A JSON string, borrowed from the input where possible.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for FireBody<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = FireBody<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object with a string member `reason`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut reason: Option<Cow<'de, str>> = None;
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    if key == "reason" {
                        if reason.is_some() {
                            return Err(de::Error::duplicate_field("reason"));
                        }
                        reason = Some(map.next_value::<Text<'de>>()?.0);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                let reason = reason.ok_or_else(|| de::Error::missing_field("reason"))?;
                Ok(FireBody { reason })
            }
        }
        deserializer.deserialize_map(BodyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(body: &str) -> Option<String> {
        serde_json::from_str::<FireBody>(body)
            .ok()
            .map(|b| b.reason.into_owned())
    }

    #[test]
    fn accepts_objects_with_a_string_reason() {
        assert_eq!(reason(r#"{"reason":"x"}"#).as_deref(), Some("x"));
        assert_eq!(
            reason(r#" {"a":[1,{"b":2}],"reason":"é\n\"","c":null} "#).as_deref(),
            Some("é\n\"")
        );
        assert_eq!(reason(r#"{"reason":""}"#).as_deref(), Some(""));
    }

    #[test]
    fn rejects_everything_else() {
        for body in [
            "",
            "{",
            "null",
            r#"["x"]"#,
            r#""x""#,
            "{}",
            r#"{"reason":null}"#,
            r#"{"reason":1}"#,
            r#"{"reason":["x"]}"#,
            r#"{"reason":"x"} x"#,
            r#"{"reason":"x","reason":"y"}"#,
            r#"{"Reason":"x"}"#,
        ] {
            assert_eq!(reason(body), None, "{body}");
        }
    }
}
