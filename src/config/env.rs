//! Which `HOLDFAST_*` variables are configuration. A wrapper script may set
//! its own `HOLDFAST_SOMETHING`; that must not stop the service, but a typo
//! must not pass silently either (DESIGN.md §6):
//! * a variable whose section (or top-level key) exists goes to the loader,
//!   so a misspelt key in it (`HOLDFAST_DATABASE__ULR`) is refused with the
//!   list of valid keys;
//! * one that names no section is set aside: a warning in development, a
//!   refusal in production (`HOLDFAST_ENVIRONMENT=production` must not start
//!   a production deployment in development mode).

use serde::de::{self, Deserialize, Deserializer, Visitor};

pub(super) const PREFIX: &str = "HOLDFAST_";

/// Variables that share the prefix but are read elsewhere: `--config`'s
/// `HOLDFAST_CONFIG` and the log filter `HOLDFAST_LOG`.
const NOT_CONFIG_KEYS: &[&str] = &["config", "log"];

/// The variables that name no section or top-level key, as written.
pub(super) fn unknown_variables(vars: impl Iterator<Item = String>) -> Vec<String> {
    let known = top_level_keys::<super::Config>();
    let mut unknown: Vec<String> = vars
        .filter_map(|name| {
            let rest = name.strip_prefix(PREFIX)?.to_ascii_lowercase();
            let first = rest.split("__").next().unwrap_or_default().to_string();
            let ours = NOT_CONFIG_KEYS.contains(&rest.as_str()) || known.contains(&first.as_str());
            (!ours).then_some(name)
        })
        .collect();
    unknown.sort();
    unknown
}

/// What to say about an unknown variable.
pub(super) fn describe(name: &str) -> String {
    let keys = top_level_keys::<super::Config>().join(", ");
    format!(
        "{name} names no configuration section or key (top level: {keys}; sections as \
         HOLDFAST_<SECTION>__<KEY>)"
    )
}

/// The field names `T` deserialises, read from serde's own list so a
/// section added to `Config` is known here without a second list to keep.
fn top_level_keys<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Capture(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field capture")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Capture {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut capture = Capture(None);
    let _ = T::deserialize(&mut capture);
    capture.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(names: &[&str]) -> Vec<String> {
        unknown_variables(names.iter().map(|n| n.to_string()))
    }

    #[test]
    fn sections_keys_and_our_own_variables_are_known() {
        assert!(
            unknown(&[
                "HOLDFAST_DATABASE__URL",
                "HOLDFAST_DATABASE__ULR",
                "HOLDFAST_ENV",
                "HOLDFAST_MASTER_KEY",
                "HOLDFAST_LOG",
                "HOLDFAST_CONFIG",
                "HOLDFAST_RATE_LIMIT__LOGIN_PER_IP",
                "HOLDFAST_BREAKER__DATABASE__OPEN_WAIT",
                "PATH",
            ])
            .is_empty()
        );
    }

    #[test]
    fn names_outside_every_section_are_unknown() {
        assert_eq!(
            unknown(&[
                "HOLDFAST_ENVIRONMENT",
                "HOLDFAST_WRAPPER_PID",
                "HOLDFAST_ENV"
            ]),
            vec!["HOLDFAST_ENVIRONMENT", "HOLDFAST_WRAPPER_PID"]
        );
        assert!(describe("HOLDFAST_ENVIRONMENT").contains("env, listen"));
    }
}
