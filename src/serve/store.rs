//! The visit count on disk: `<data dir>/visits.json`, holding `{"visits": N}`,
//! and, once a blue/green rollout carried another pod's count in, what was
//! carried last: `{"visits": N, "carried": {"key": K, "seen": S}}`.
//! It also reads the seed Go app's `{"visits": "N"}`, so that app's volumes can
//! be adopted; the next write puts the count back in the number form.
//!
//! A new count replaces the old one atomically: write a temporary file, fsync
//! it, rename it over `visits.json`, fsync the directory. A crash at any moment
//! leaves either the old file or the new one, both of which parse.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde_json::Value;

/// Name of the count's file in the data directory.
pub const VISITS_FILE: &str = "visits.json";
const TEMP_FILE: &str = ".visits.json.tmp";

/// Why the store cannot start. Each names the path and the problem; none
/// touches `visits.json`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {path} does not exist: mount the app's volume there or pass --data-dir")]
    MissingDir { path: PathBuf },
    #[error("data directory {path} is not a directory")]
    NotADir { path: PathBuf },
    #[error("data directory {path} is not writable: {source}")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not valid JSON ({source}); refusing to start rather than reset the count to zero")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} holds {found}, not a count: expected {{\"visits\": N}} or {{\"visits\": \"N\"}} with N a whole number of at least 0; refusing to start rather than reset the count to zero"
    )]
    BadCount { path: PathBuf, found: String },
}

/// The count in a parsed `visits.json`: `{"visits": N}`, or the seed Go app's
/// `{"visits": "N"}` with only ASCII digits in the string. `None` for anything
/// else, a count too big for a `u64` included.
fn count_of(value: &Value) -> Option<u64> {
    match value.get("visits")? {
        Value::Number(n) => n.as_u64(),
        // `u64::from_str` alone would take a leading '+'.
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    }
}

/// The last count carried in from another pod (`POST /carry`): under which
/// key, and the count that pod had then.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Carried {
    pub key: String,
    pub seen: u64,
}

impl Carried {
    /// The count after carrying in `seen`, another pod's count, under `key`,
    /// from `count` with `self` carried last: on first contact under a key
    /// the larger of the two counts (the other pod's holds every visit this
    /// one's did before), then each visit the other pod answered since.
    pub fn carry(last: Option<&Self>, count: u64, key: &str, seen: u64) -> (u64, Self) {
        let next = match last {
            Some(last) if last.key == key => count.saturating_add(seen.saturating_sub(last.seen)),
            _ => count.max(seen),
        };
        let seen = match last {
            Some(last) if last.key == key => seen.max(last.seen),
            _ => seen,
        };
        (
            next,
            Self {
                key: key.to_owned(),
                seen,
            },
        )
    }
}

/// Where the count lives.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens the data directory and reads the count: 0 when `visits.json` does
    /// not exist yet, an error when anything else is off.
    pub fn open(dir: &Path) -> Result<(Self, u64), StoreError> {
        let metadata = match fs::metadata(dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingDir { path: dir.into() });
            }
            Err(source) => {
                return Err(StoreError::Read {
                    path: dir.into(),
                    source,
                });
            }
        };
        if !metadata.is_dir() {
            return Err(StoreError::NotADir { path: dir.into() });
        }
        let store = Self { dir: dir.into() };
        let count = store.read_count()?;
        store.check_writable()?;
        Ok((store, count))
    }

    /// Path of `visits.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(VISITS_FILE)
    }

    fn read_count(&self) -> Result<u64, StoreError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let value: Value = serde_json::from_slice(&bytes).map_err(|source| StoreError::Parse {
            path: path.clone(),
            source,
        })?;
        count_of(&value).ok_or_else(|| StoreError::BadCount {
            path,
            found: value.to_string(),
        })
    }

    /// Proves the directory takes a new file (the temporary one), so a
    /// read-only volume fails at start and not on the first visit.
    fn check_writable(&self) -> Result<(), StoreError> {
        let temp = self.dir.join(TEMP_FILE);
        let result = File::create(&temp).and_then(|f| f.sync_all());
        let _ = fs::remove_file(&temp);
        result.map_err(|source| StoreError::NotWritable {
            path: self.dir.clone(),
            source,
        })
    }

    /// What was carried in last, as `visits.json` says; `None` when nothing
    /// was or the file cannot be read (`open` has read it already).
    pub fn carried(&self) -> Option<Carried> {
        let value: Value = serde_json::from_slice(&fs::read(self.path()).ok()?).ok()?;
        serde_json::from_value(value.get("carried")?.clone()).ok()
    }

    /// Makes `count` the durable count, with what was carried in last.
    /// Blocking: call it off the async runtime.
    pub fn write(&self, count: u64, carried: Option<&Carried>) -> io::Result<()> {
        let temp = self.dir.join(TEMP_FILE);
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&temp)?;
        let content = match carried {
            Some(carried) => serde_json::json!({ "visits": count, "carried": carried }),
            None => serde_json::json!({ "visits": count }),
        };
        file.write_all(content.to_string().as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, self.path())?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(contents: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(contents) = contents {
            fs::write(dir.path().join(VISITS_FILE), contents).unwrap();
        }
        dir
    }

    #[test]
    fn an_absent_file_starts_at_zero_and_a_written_count_reads_back() {
        let dir = dir_with(None);
        let (store, count) = Store::open(dir.path()).unwrap();
        assert_eq!(count, 0);
        store.write(42, None).unwrap();
        assert_eq!(fs::read_to_string(store.path()).unwrap(), r#"{"visits":42}"#);
        assert_eq!(Store::open(dir.path()).unwrap().1, 42);
        assert!(!dir.path().join(TEMP_FILE).exists());
    }

    #[test]
    fn a_carried_record_is_written_and_read_back_with_the_count() {
        let dir = dir_with(None);
        let (store, _) = Store::open(dir.path()).unwrap();
        let carried = Carried {
            key: "web-0@1-abc".into(),
            seen: 40,
        };
        store.write(45, Some(&carried)).unwrap();
        assert_eq!(Store::open(dir.path()).unwrap().1, 45);
        assert_eq!(store.carried(), Some(carried));
    }

    #[test]
    fn a_first_carry_takes_the_larger_count() {
        assert_eq!(Carried::carry(None, 3, "k", 40).0, 40);
        assert_eq!(Carried::carry(None, 50, "k", 40).0, 50);
        let older = Carried {
            key: "old".into(),
            seen: 70,
        };
        assert_eq!(
            Carried::carry(Some(&older), 3, "k", 40),
            (
                40,
                Carried {
                    key: "k".into(),
                    seen: 40
                }
            )
        );
    }

    #[test]
    fn a_carry_under_the_same_key_adds_only_the_visits_since() {
        let (count, last) = Carried::carry(None, 0, "k", 40);
        // Two visits here, five there.
        let (count, last) = Carried::carry(Some(&last), count + 2, "k", 45);
        assert_eq!(count, 47);
        // The same answer again, or an older one, adds nothing.
        assert_eq!(Carried::carry(Some(&last), count, "k", 45).0, 47);
        let (count, last) = Carried::carry(Some(&last), count, "k", 44);
        assert_eq!((count, last.seen), (47, 45));
    }

    #[test]
    fn the_seed_python_format_reads() {
        let dir = dir_with(Some(r#"{"visits": 790}"#));
        assert_eq!(Store::open(dir.path()).unwrap().1, 790);
    }

    fn count_in(json: &str) -> Option<u64> {
        count_of(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn count_of_a_number() {
        assert_eq!(count_in(r#"{"visits": 790}"#), Some(790));
    }

    #[test]
    fn count_of_zero() {
        assert_eq!(count_in(r#"{"visits": 0}"#), Some(0));
        assert_eq!(count_in(r#"{"visits": "0"}"#), Some(0));
    }

    #[test]
    fn count_of_the_go_apps_string() {
        assert_eq!(count_in(r#"{"visits":"513"}"#), Some(513));
    }

    #[test]
    fn count_of_the_largest_u64_in_both_forms() {
        assert_eq!(count_in(r#"{"visits": 18446744073709551615}"#), Some(u64::MAX));
        assert_eq!(count_in(r#"{"visits": "18446744073709551615"}"#), Some(u64::MAX));
    }

    #[test]
    fn count_of_a_string_too_big_for_u64_is_none() {
        assert_eq!(count_in(r#"{"visits": "18446744073709551616"}"#), None);
    }

    #[test]
    fn count_of_an_empty_string_is_none() {
        assert_eq!(count_in(r#"{"visits": ""}"#), None);
    }

    #[test]
    fn count_of_a_string_with_a_letter_is_none() {
        assert_eq!(count_in(r#"{"visits": "12a"}"#), None);
    }

    #[test]
    fn count_of_a_signed_string_is_none() {
        assert_eq!(count_in(r#"{"visits": "-1"}"#), None);
        assert_eq!(count_in(r#"{"visits": "+1"}"#), None);
    }

    #[test]
    fn count_of_a_decimal_string_is_none() {
        assert_eq!(count_in(r#"{"visits": "1.5"}"#), None);
        assert_eq!(count_in(r#"{"visits": "1e3"}"#), None);
    }

    #[test]
    fn count_of_a_string_with_spaces_is_none() {
        assert_eq!(count_in(r#"{"visits": " 1"}"#), None);
        assert_eq!(count_in(r#"{"visits": "1 "}"#), None);
        assert_eq!(count_in(r#"{"visits": "1 000"}"#), None);
    }

    #[test]
    fn count_of_a_string_with_non_ascii_digits_is_none() {
        assert_eq!(count_in(r#"{"visits": "١٢"}"#), None);
    }

    #[test]
    fn count_of_a_negative_or_fractional_number_is_none() {
        assert_eq!(count_in(r#"{"visits": -3}"#), None);
        assert_eq!(count_in(r#"{"visits": 1.5}"#), None);
    }

    #[test]
    fn count_of_other_shapes_is_none() {
        for json in [
            r#"{"visits": null}"#,
            r#"{"visits": true}"#,
            r#"{"visits": [1]}"#,
            r#"{"visits": {"n": 1}}"#,
            r#"{"count": 1}"#,
            r#"[]"#,
            r#""513""#,
            "513",
        ] {
            assert_eq!(count_in(json), None, "{json}");
        }
    }

    #[test]
    fn the_seed_go_format_reads_and_is_left_untouched_until_a_write() {
        let go = r#"{"visits":"513"}"#;
        let dir = dir_with(Some(go));
        let (store, count) = Store::open(dir.path()).unwrap();
        assert_eq!(count, 513);
        assert_eq!(fs::read_to_string(store.path()).unwrap(), go);
        store.write(514, None).unwrap();
        assert_eq!(fs::read_to_string(store.path()).unwrap(), r#"{"visits":514}"#);
    }

    #[test]
    fn bad_counts_are_refused_and_named() {
        for contents in [
            r#"{"visits":"-5"}"#,
            r#"{"visits":"12a"}"#,
            r#"{"visits":""}"#,
            r#"{"visits":-3}"#,
            r#"{"visits":1.5}"#,
            r#"{"count":1}"#,
            "[]",
        ] {
            let dir = dir_with(Some(contents));
            let error = Store::open(dir.path()).unwrap_err().to_string();
            assert!(error.contains("visits.json holds"), "{contents}: {error}");
            assert!(error.contains("refusing to start"), "{contents}: {error}");
            assert_eq!(fs::read_to_string(dir.path().join(VISITS_FILE)).unwrap(), contents);
        }
    }

    #[test]
    fn a_missing_or_file_data_dir_is_refused() {
        let dir = dir_with(None);
        let missing = dir.path().join("nope");
        assert!(matches!(Store::open(&missing), Err(StoreError::MissingDir { .. })));
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(matches!(Store::open(&file), Err(StoreError::NotADir { .. })));
    }
}
