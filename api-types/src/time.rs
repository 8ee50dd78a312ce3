//! Instants as requests give them, and series steps; with the parsing the server applies.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use wattprint_core::{UnixMillis, BUCKET_MS};

/// An instant as given in a JSON body: integer milliseconds or a string (RFC 3339 or digits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InstantInput {
    /// Unix milliseconds.
    UnixMillis(i64),
    /// RFC 3339 or a decimal string of Unix milliseconds.
    Rfc3339(String),
}

/// The document states what the server reads: integer milliseconds within
/// [`MIN_TIME`]..=[`MAX_TIME`], or an RFC 3339 date-time (a string of digits is read as
/// milliseconds too).
impl utoipa::PartialSchema for InstantInput {
    fn schema() -> RefOr<Schema> {
        let millis = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(MIN_TIME.0 as f64))
            .maximum(Some(MAX_TIME.0 as f64))
            .description(Some("Unix milliseconds."));
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some(
                "RFC 3339 date-time, years 0000 to 9999 (a string of digits is read as Unix \
                 milliseconds too).",
            ));
        OneOfBuilder::new()
            .item(millis)
            .item(text)
            .description(Some(
                "An instant as given in a JSON body: integer milliseconds or an RFC 3339 string.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for InstantInput {}

/// Resolution of a series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Step {
    /// The stored samples as they are.
    #[serde(rename = "raw")]
    Raw,
    /// 5-minute buckets (the accounting granularity; the default).
    #[default]
    #[serde(rename = "5m")]
    FiveMinutes,
    /// Hours (UTC).
    #[serde(rename = "1h")]
    Hour,
    /// Days (UTC midnight to midnight).
    #[serde(rename = "1d")]
    Day,
}

/// Earliest instant accepted: 0000-01-01T00:00:00Z. Bounding inputs to years 0–9999 keeps
/// every sum and alignment below far from `i64` overflow.
pub const MIN_TIME: UnixMillis = UnixMillis(-62_167_219_200_000);

/// Latest instant accepted: 9999-12-31T23:59:59.999Z.
pub const MAX_TIME: UnixMillis = UnixMillis(253_402_300_799_999);

/// Parses an instant given as RFC 3339 (`2026-11-23T00:00:00Z`, any offset) or as integer
/// Unix milliseconds. The error says what was wrong, for a 400.
pub fn parse_instant(name: &str, raw: &str) -> Result<UnixMillis, String> {
    let raw = raw.trim();
    let t = if !raw.is_empty()
        && raw
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
    {
        raw.parse::<i64>()
            .map_err(|_| format!("{name}: {raw:?} is out of range"))?
    } else {
        chrono::DateTime::parse_from_rfc3339(raw)
            .map_err(|e| {
                format!("{name}: {raw:?} is neither RFC 3339 (e.g. 2026-11-23T00:00:00Z) nor integer unix milliseconds ({e})")
            })?
            .timestamp_millis()
    };
    check_bounds(name, UnixMillis(t))
}

/// Parses a required instant parameter: [`parse_instant`], or an error naming it when it is
/// absent. An empty value (what a gRPC client sends for an unset string) counts as absent.
pub fn parse_required_instant(name: &str, raw: Option<&str>) -> Result<UnixMillis, String> {
    match raw.filter(|s| !s.is_empty()) {
        Some(s) => parse_instant(name, s),
        None => Err(format!(
            "{name} is required (RFC 3339, e.g. 2026-11-01T00:00:00Z, or unix milliseconds)"
        )),
    }
}

/// Checks an instant lies within [`MIN_TIME`, `MAX_TIME`].
pub fn check_bounds(name: &str, t: UnixMillis) -> Result<UnixMillis, String> {
    if t < MIN_TIME || t > MAX_TIME {
        return Err(format!("{name}: {} ms is outside years 0000-9999", t.0));
    }
    Ok(t)
}

impl InstantInput {
    /// Parses into an instant, naming the field in the error.
    pub fn parse(&self, name: &str) -> Result<UnixMillis, String> {
        match self {
            InstantInput::UnixMillis(ms) => check_bounds(name, UnixMillis(*ms)),
            InstantInput::Rfc3339(s) => parse_instant(name, s),
        }
    }
}

impl Step {
    /// Parses `raw`, `5m`, `1h` or `1d`.
    pub fn parse(s: &str) -> Result<Step, String> {
        match s {
            "raw" => Ok(Step::Raw),
            "5m" => Ok(Step::FiveMinutes),
            "1h" => Ok(Step::Hour),
            "1d" => Ok(Step::Day),
            other => Err(format!("step: {other:?} is not one of raw, 5m, 1h, 1d")),
        }
    }

    /// The name used in requests and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Raw => "raw",
            Step::FiveMinutes => "5m",
            Step::Hour => "1h",
            Step::Day => "1d",
        }
    }

    /// Length of one step; `None` for raw.
    pub fn millis(self) -> Option<i64> {
        match self {
            Step::Raw => None,
            Step::FiveMinutes => Some(BUCKET_MS),
            Step::Hour => Some(3_600_000),
            Step::Day => Some(86_400_000),
        }
    }
}

impl InstantInput {
    /// The current wall-clock time, to the millisecond.
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        InstantInput::UnixMillis(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    /// The form sent in a query string.
    pub fn to_query(&self) -> String {
        match self {
            InstantInput::UnixMillis(ms) => ms.to_string(),
            InstantInput::Rfc3339(s) => s.clone(),
        }
    }
}

impl std::str::FromStr for InstantInput {
    type Err = std::convert::Infallible;

    /// Digits (with an optional leading `-`) are Unix milliseconds; anything else is kept as
    /// RFC 3339 text for the server to check.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let digits = s.strip_prefix('-').unwrap_or(s);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(ms) = s.parse::<i64>() {
                return Ok(InstantInput::UnixMillis(ms));
            }
        }
        Ok(InstantInput::Rfc3339(s.to_owned()))
    }
}

impl std::fmt::Display for InstantInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_query())
    }
}

impl From<i64> for InstantInput {
    fn from(ms: i64) -> Self {
        InstantInput::UnixMillis(ms)
    }
}

impl From<&str> for InstantInput {
    fn from(s: &str) -> Self {
        InstantInput::Rfc3339(s.to_owned())
    }
}

impl From<String> for InstantInput {
    fn from(s: String) -> Self {
        InstantInput::Rfc3339(s)
    }
}
