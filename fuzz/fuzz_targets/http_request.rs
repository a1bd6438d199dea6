//! The HTTP request head parser and everything that reads its result:
//! query decoding, transport choice, mailbox names, cursors.
#![no_main]

use cometbox::http::{Parsed, parse_request, percent_decode, query_pairs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Parsed::Complete(req, len) = parse_request(data, 8192) {
        assert!(len <= data.len());
        let _ = cometbox::transport::choose(&req);
        for (key, value) in query_pairs(req.query) {
            let _ = (key.len(), cometbox::store::Cursor::parse(&value));
        }
        let name = percent_decode(req.path, false);
        let _ = cometbox::store::is_valid_name(&name);
    }
});
