//! The gateway.conf loader: any text gives a config or an error naming a
//! line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Includes resolve against a directory with nothing in it.
    let _ = cometbox::Config::parse_str(&text, std::path::Path::new("/nonexistent/fuzz.conf"));
});
