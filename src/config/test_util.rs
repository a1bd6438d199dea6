//! Helpers shared by the config unit tests: parse a snippet, assert where an
//! error points, and a temporary directory for include and key files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Config, ConfigError};

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_str(text, Path::new("test.conf"))
}

pub(super) fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
        Err(e) => e,
    }
}

/// Asserts the error is on `line` of test.conf and mentions `needle`.
#[track_caller]
pub(super) fn assert_err(text: &str, line: usize, needle: &str) {
    let e = parse_err(text);
    assert_eq!(e.file(), Path::new("test.conf"), "{e}");
    assert_eq!(e.line(), Some(line), "{e}");
    assert!(
        e.to_string().starts_with(&format!("test.conf:{line}: ")),
        "{e}"
    );
    assert!(e.message().contains(needle), "{e:?} lacks {needle:?}");
}

/// A fresh directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cometbox-config-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub(super) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create dir");
        }
        std::fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn manifest_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
