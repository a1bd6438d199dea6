//! The token check: arbitrary tokens against a fixed key never panic and
//! are never accepted (the fuzzer cannot forge HS256), and the mailbox
//! grant check holds its rules for arbitrary claims.
#![no_main]

use cometbox::auth::{Auth, grants};
use cometbox::config::AuthConfig;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn auth() -> &'static Auth {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let path = std::env::temp_dir().join("cometbox-fuzz-secret");
        std::fs::write(&path, "fuzzing-secret-fuzzing-secret-fuzzing-secret").unwrap();
        let config = AuthConfig {
            required: true,
            jwt_secret_file: Some(path),
            ..AuthConfig::default()
        };
        Auth::from_config(&config).unwrap().unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    assert!(auth().check(Some(data), "user:alice").is_err());
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let mailbox = parts.next().unwrap_or("");
    let claim: Vec<String> = parts.map(String::from).collect();
    let granted = grants(&claim, mailbox);
    // An exact entry always grants; nothing grants without a matching entry.
    if claim.iter().any(|c| c == mailbox) {
        assert!(granted);
    }
    if granted {
        assert!(claim.iter().any(|c| c == mailbox || c.strip_suffix('*').is_some_and(|p| mailbox.starts_with(p))));
    }
});
