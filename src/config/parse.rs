//! The contract's value syntaxes: durations (`250ms`, `15m`), rates
//! (`10/min`, `5/15min`) and address lists.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Durations as the contract writes them: `250ms`, `2s`, `15m`, `30d`.
pub(super) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration like 250ms, 2s, 15m ({e})"
        ))
    })
}

/// `["10.0.0.0/8", "192.0.2.7"]`: networks, a bare address meaning itself.
pub(super) fn networks<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!("`{text}` is not an address or CIDR network"))
                })
        })
        .collect()
}

/// Rates as the contract writes them: `10/min`, `5/15min`, `100/1h`.
pub(super) fn rate<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Window, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_rate(&text).ok_or_else(|| {
        serde::de::Error::custom(format!("`{text}` is not a rate like 10/min or 5/15min"))
    })
}

pub fn parse_rate(text: &str) -> Option<Window> {
    let (count, per) = text.trim().split_once('/')?;
    let limit: u32 = count.trim().parse().ok().filter(|n| *n > 0)?;
    let per = per.trim();
    let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
        per.to_string()
    } else {
        format!("1{per}")
    };
    let period = humantime::parse_duration(&per)
        .ok()
        .filter(|d| !d.is_zero())?;
    Some(Window { limit, period })
}

pub(super) fn opt_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

/// `limit` events per `period`, e.g. 5 per 15 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u32,
    pub period: std::time::Duration,
}
