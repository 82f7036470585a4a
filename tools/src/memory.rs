//! How much memory a run may use, and the check every command makes before it
//! allocates: the estimated peak against the limit, refused with
//! [`Error::OutOfMemory`] naming both instead of an abort half-way.
//!
//! The limit is `--max-memory` when given, else the smaller of the kernel's
//! `MemAvailable` (`/proc/meminfo`) and the cgroup's limit less its current use
//! (cgroup v2 `memory.max` / `memory.current`, or v1 `memory.limit_in_bytes` /
//! `memory.usage_in_bytes`), so containers and CI runners are respected. Where neither
//! can be read (not Linux) there is no limit beyond the size checks of
//! [`polyattn::tensor::checked_alloc_len`].

use polyattn::error::{Error, Result};

/// A memory limit and where it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    /// Bytes.
    pub bytes: u64,
    /// Where the number comes from, for the message.
    pub source: String,
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `MemAvailable` from `/proc/meminfo`, bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The cgroup's limit less its current use, bytes (`None` when unlimited or absent).
fn cgroup_headroom() -> Option<u64> {
    let v2 = read_u64("/sys/fs/cgroup/memory.max").zip(read_u64("/sys/fs/cgroup/memory.current"));
    let v1 = || {
        read_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes")
            .zip(read_u64("/sys/fs/cgroup/memory/memory.usage_in_bytes"))
    };
    // v1 reports "no limit" as a huge number (about 2^63): treat >= 2^60 as none.
    let (max, cur) = v2.or_else(v1)?;
    (max < 1 << 60).then(|| max.saturating_sub(cur))
}

/// The limit in force: `requested` (from `--max-memory`) or what the machine and its
/// cgroup leave; `None` where nothing can be read.
pub fn limit(requested: Option<u64>) -> Option<Limit> {
    if let Some(bytes) = requested {
        return Some(Limit {
            bytes,
            source: "--max-memory".into(),
        });
    }
    match (mem_available(), cgroup_headroom()) {
        (Some(a), Some(c)) if c < a => Some(Limit {
            bytes: c,
            source: "the cgroup's memory limit less its use".into(),
        }),
        (Some(a), _) => Some(Limit {
            bytes: a,
            source: "MemAvailable in /proc/meminfo".into(),
        }),
        (None, Some(c)) => Some(Limit {
            bytes: c,
            source: "the cgroup's memory limit less its use".into(),
        }),
        (None, None) => None,
    }
}

/// Refuses a run (`what`) whose estimated peak, `needed` bytes, exceeds `limit`.
pub fn check(what: &str, needed: f64, limit: Option<&Limit>) -> Result<()> {
    let Some(limit) = limit else {
        return Ok(());
    };
    if needed.is_finite() && needed <= limit.bytes as f64 {
        return Ok(());
    }
    let needed_b = if needed.is_finite() && needed < u64::MAX as f64 {
        needed as u64
    } else {
        u64::MAX
    };
    const GIB: f64 = (1u64 << 30) as f64;
    Err(Error::OutOfMemory {
        what: what.into(),
        needed: needed_b,
        needed_gib: needed_b as f64 / GIB,
        limit: limit.bytes,
        limit_gib: limit.bytes as f64 / GIB,
        source_of_limit: limit.source.clone(),
    })
}

/// Parses a size like `512M`, `16G`, `1.5GiB`, `2e9` (bytes; K, M, G, T with or
/// without `iB`/`B` are powers of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 512M, 16G, 2e9)"))?;
    let mult = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches('B')
        .trim_end_matches('I')
    {
        "" => 1u64,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (K, M, G, T)")),
    };
    let bytes = x * mult as f64;
    if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}` is not a size in 0..2^64 bytes"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("16GiB"), Ok(16 << 30));
        assert_eq!(parse_size("2e9"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("3Q").is_err());
    }

    #[test]
    fn over_the_limit_is_a_typed_refusal() {
        let l = Limit {
            bytes: 1 << 30,
            source: "--max-memory".into(),
        };
        assert!(check("x", 1e9, Some(&l)).is_ok());
        let e = check("model --init", 2e10, Some(&l)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::OutOfMemory { .. }));
        assert!(
            msg.contains("model --init") && msg.contains("--max-memory"),
            "{msg}"
        );
        assert!(check("x", f64::INFINITY, Some(&l)).is_err());
        assert!(check("x", 1e30, None).is_ok());
    }

    #[test]
    fn the_machine_has_a_limit_on_linux() {
        if std::path::Path::new("/proc/meminfo").exists() {
            let l = limit(None).expect("MemAvailable is readable");
            assert!(l.bytes > 0);
        }
    }
}
