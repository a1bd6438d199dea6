//! `/cometbox.js` and `/cometbox.mjs`: the browser client, served from the
//! binary with a long cache lifetime and an ETag.

mod common;

use common::*;
use std::io::{BufReader, Write};

const SOURCE: &str = include_str!("../client/cometbox.js");

#[test]
fn classic_script_is_the_source_file_with_cache_headers() {
    let gw = Gateway::start("");
    let resp = gw.get("/cometbox.js");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, SOURCE.as_bytes());
    assert_eq!(
        resp.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(resp.header("cache-control"), Some("public, max-age=604800"));
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    let etag = resp.header("etag").expect("an ETag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10,
        "{etag}"
    );
}

#[test]
fn module_form_appends_the_export_and_has_its_own_etag() {
    let gw = Gateway::start("");
    let classic = gw.get("/cometbox.js");
    let module = gw.get("/cometbox.mjs");
    assert_eq!(module.status, 200);
    let text = module.text();
    assert!(text.starts_with(SOURCE), "the module is the same source");
    assert!(
        text.ends_with("export default cometbox;\nexport const subscribe = cometbox.subscribe;\n")
    );
    assert_ne!(module.header("etag"), classic.header("etag"));
}

#[test]
fn if_none_match_gets_304_without_a_body_and_head_gets_headers() {
    let gw = Gateway::start("");
    let etag = gw.get("/cometbox.js").header("etag").unwrap().to_string();
    for tags in [etag.clone(), format!("\"other\", {etag}"), "*".to_string()] {
        let resp = gw.get_with("/cometbox.js", &format!("If-None-Match: {tags}\r\n"));
        assert_eq!(resp.status, 304, "If-None-Match: {tags}");
        assert!(resp.body.is_empty());
        assert_eq!(resp.header("etag"), Some(etag.as_str()));
    }
    let stale = gw.get_with("/cometbox.js", "If-None-Match: \"stale\"\r\n");
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, SOURCE.as_bytes());

    let mut s = gw.connect();
    s.write_all(b"HEAD /cometbox.js HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let head = read_head_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(SOURCE.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
}

#[test]
fn other_methods_and_paths_are_not_the_script() {
    let gw = Gateway::start("");
    let post = gw.request("POST /cometbox.js HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, 404);
    assert_eq!(gw.get("/cometbox.jsx").status, 404);
    assert_eq!(gw.get("/client/cometbox.js").status, 404);
}
