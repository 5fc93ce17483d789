//! Human-readable durations ("30s", "1m") and sizes ("25MiB") for config files.

use serde::{Deserialize, Deserializer, de};
use std::fmt;
use std::time::Duration;

/// A duration written as text, e.g. `"30s"`, `"5m"`, `"24h"` (parsed by `humantime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Dur).map_err(|e| {
            de::Error::custom(format!("invalid duration {text:?} ({e}); write e.g. \"30s\", \"5m\", \"24h\""))
        })
    }
}

/// Written back as text (the config reference test serialises a whole config).
#[cfg(test)]
impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A byte size written as text (`"10GiB"`, `"25MiB"`, `"512KB"`) or as a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl de::Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"25MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(Size).map_err(|_| E::custom("size must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|b| Size(b.as_u64()))
                    .map_err(|e| E::custom(format!("invalid size {v:?} ({e}); write e.g. \"25MiB\", \"10GiB\"")))
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
impl serde::Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

/// A send rate written as text: `"14/s"`, `"600/m"`, `"3600/h"` (a whole count per second,
/// minute or hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// The time one unit of the rate takes up: `per / count` (a send every 50 ms at 20/s).
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || de::Error::custom(format!("invalid rate {text:?}; write e.g. \"14/s\", \"600/m\", \"3600/h\""));
        let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate { count, per })
    }
}

/// Written back as text (the config reference test serialises a whole config).
#[cfg(test)]
impl serde::Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        d: Dur,
        s: Size,
    }

    #[test]
    fn parses_units() {
        let t: T = toml::from_str("d = \"1m 30s\"\ns = \"10GiB\"").unwrap();
        assert_eq!(t.d.0, Duration::from_secs(90));
        assert_eq!(t.s.0, 10 * 1024 * 1024 * 1024);
        let t: T = toml::from_str("d = \"24h\"\ns = 1024").unwrap();
        assert_eq!(t.d.0, Duration::from_secs(86400));
        assert_eq!(t.s.0, 1024);
        assert!(toml::from_str::<T>("d = \"soon\"\ns = 1").is_err());
        assert!(toml::from_str::<T>("d = \"1s\"\ns = \"lots\"").is_err());
    }

    #[test]
    fn parses_rates() {
        #[derive(Deserialize)]
        struct R {
            r: Rate,
        }
        let rate = |text: &str| toml::from_str::<R>(&format!("r = {text:?}")).map(|r| r.r);
        assert_eq!(rate("14/s").unwrap().interval(), Duration::from_nanos(71_428_571));
        assert_eq!(rate("20/s").unwrap().interval(), Duration::from_millis(50));
        assert_eq!(rate(" 600 / m ").unwrap().interval(), Duration::from_millis(100));
        assert_eq!(rate("3600/h").unwrap().to_string(), "3600/h");
        for bad in ["0/s", "14", "14/d", "-1/s", "fast/s", "1.5/s"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }
}
