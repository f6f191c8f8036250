//! Local sink: writes each message as one JSON file in `dir` (the JSON of
//! [`super::Outgoing::to_json`]), for demos and dry runs. Every channel goes here by default, so
//! a fresh machine runs the whole cycle without credentials.
//!
//! The file is named after the message's idempotency key ([`FileSink::path_for`]), not its
//! outbox id: ids start again at 1 in a rebuilt database, and a new message must not be taken
//! for one an old file already holds. It is written under a temporary name and then linked to
//! its final name, which fails if that name exists: a message whose file is already there counts
//! as accepted, and the first file is never overwritten. So resending is harmless
//! (`honours_idempotency_key` = true).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use super::config::FileSettings;
use super::{Accepted, Outgoing, Provider, SendError, traced};
use crate::campaigns::Channel;

#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FileSink {
    pub fn new(s: &FileSettings) -> FileSink {
        FileSink { dir: s.dir.clone() }
    }

    /// `{dir}/{key}.{hash}.json`: the idempotency key with every character other than ASCII
    /// letters, digits, `-` and `_` replaced by `_` (so `campaign/customer/day` reads
    /// `campaign_customer_day`), cut to 100 characters, then the first 16 hex digits of the
    /// key's SHA-256, which keeps two keys apart even when they differ only in a replaced
    /// character, in case (on case-insensitive file systems) or past the cut.
    pub fn path_for(&self, idempotency_key: &str) -> PathBuf {
        let readable: String = idempotency_key
            .chars()
            .take(100)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let digest = Sha256::digest(idempotency_key.as_bytes());
        let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{readable}.{hash}.json"))
    }

    async fn write(&self, msg: &Outgoing<'_>) -> Result<Accepted, SendError> {
        let mut bytes = serde_json::to_vec_pretty(&msg.to_json())
            .map_err(|e| SendError::permanent(format!("cannot encode the message: {e}")))?;
        bytes.push(b'\n');
        let dir = self.dir.clone();
        let path = self.path_for(msg.idempotency_key);
        let result =
            tokio::task::spawn_blocking(move || write_once(&dir, &path, &bytes).map(|_| path))
                .await;
        match result {
            Ok(Ok(path)) => Ok(Accepted {
                provider_message_id: Some(path.display().to_string()),
            }),
            Ok(Err(e)) => Err(SendError::transient(format!(
                "cannot write to {}: {e}",
                self.dir.display()
            ))),
            Err(e) => Err(SendError::transient(format!("file writer failed: {e}"))),
        }
    }
}

/// Writes `bytes` to `path` unless it exists: temp file, fsync, then a hard link to the final
/// name (atomic, and refuses to replace an existing file). Where hard links are not supported
/// the temp file is renamed after checking the name is free.
fn write_once(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("message");
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let linked = match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) if !path.exists() => std::fs::rename(&tmp, path),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&tmp);
    linked
}

#[async_trait::async_trait]
impl Provider for FileSink {
    fn name(&self) -> &str {
        "file"
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Email, Channel::Sms, Channel::Whatsapp]
    }

    fn honours_idempotency_key(&self) -> bool {
        true
    }

    async fn send(&self, msg: &Outgoing<'_>) -> Result<Accepted, SendError> {
        traced(self.name(), msg, self.write(msg)).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::delivery::providers::testutil;

    #[tokio::test]
    async fn writes_one_file_per_message_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("outbox-files");
        let sink = FileSink::new(&FileSettings {
            dir: dir.clone(),
            ..Default::default()
        });
        let email = testutil::email();
        let sms = testutil::sms();
        let a = sink.send(&testutil::outgoing(&email)).await.unwrap();
        let first = sink.path_for(testutil::KEY);
        assert_eq!(
            first.file_name().unwrap().to_str().unwrap(),
            "spring-winback_C-10042_2026-11-03.a10f1ad846f44211.json"
        );
        assert_eq!(
            a.provider_message_id.as_deref(),
            Some(first.display().to_string().as_str())
        );
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&first).unwrap()).unwrap();
        assert_eq!(written, testutil::outgoing(&email).to_json());
        assert_eq!(written["channel"], "email");

        // Same key again (a resend after a crash): accepted, and the first file is kept.
        let again = Outgoing {
            rendered: &sms,
            ..testutil::outgoing(&email)
        };
        assert_eq!(sink.send(&again).await.unwrap(), a);
        let still: Value = serde_json::from_str(&std::fs::read_to_string(&first).unwrap()).unwrap();
        assert_eq!(still["channel"], "email");

        // The same message id with another key (a rebuilt database numbers from 1 again): a new
        // message, a new file.
        let other_key = "spring-winback/C-10043/2026-11-03";
        let other = Outgoing {
            idempotency_key: other_key,
            ..testutil::outgoing(&sms)
        };
        let b = sink.send(&other).await.unwrap();
        assert_ne!(a, b);
        let second: Value =
            serde_json::from_str(&std::fs::read_to_string(sink.path_for(other_key)).unwrap())
                .unwrap();
        assert_eq!(second["channel"], "sms");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "no temp files left behind: {names:?}");
        assert!(sink.honours_idempotency_key());
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        let sink = FileSink::new(&FileSettings {
            dir: PathBuf::from("out"),
            ..Default::default()
        });
        let name = |k: &str| {
            sink.path_for(k)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        };
        for k in [
            "../../etc/passwd",
            "a/b",
            "a_b",
            "A/b",
            "é/…/\\x",
            &"k".repeat(500),
        ] {
            let n = name(k);
            assert!(
                n.len() < 140
                    && !n.starts_with('.')
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{n}"
            );
            assert_eq!(sink.path_for(k).parent(), Some(Path::new("out")), "{n}");
        }
        assert_ne!(name("a/b"), name("a_b"));
        assert_ne!(name("a/b").to_lowercase(), name("A/b").to_lowercase());
        assert_eq!(name("a/b"), name("a/b"));
    }

    #[tokio::test]
    async fn unwritable_folder_is_transient() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("not-a-dir");
        std::fs::write(&blocker, b"x").unwrap();
        let sink = FileSink::new(&FileSettings {
            dir: blocker.join("sub"),
            ..Default::default()
        });
        let r = testutil::whatsapp();
        let err = sink.send(&testutil::outgoing(&r)).await.unwrap_err();
        assert!(!err.is_permanent(), "{err:?}");
    }
}
