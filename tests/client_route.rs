//! `/cometbox.js`, `/cometbox.mjs` and `/cometbox-<version>.js`: the
//! browser client's minified builds, served from the binary with an ETag,
//! gzipped for browsers that accept it.

mod common;

use common::*;
use std::io::{BufReader, Write};

const SOURCE: &str = include_str!("../client/cometbox.min.js");
const MODULE: &str = include_str!("../client/cometbox.min.mjs");

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
    // Short: after an upgrade, pages get the new client within minutes.
    assert_eq!(resp.header("cache-control"), Some("public, max-age=300"));
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
    assert_eq!(text, MODULE, "the module build");
    assert!(
        text.starts_with(SOURCE.trim_end()),
        "the module is the classic build plus exports"
    );
    assert!(
        text.trim_end()
            .ends_with("export default cometbox;\nexport const subscribe = cometbox.subscribe;")
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

#[test]
fn the_versioned_url_is_immutable_and_gzip_is_what_the_browser_downloads() {
    let gw = Gateway::start("");
    let path = format!("/cometbox-{}.js", env!("CARGO_PKG_VERSION"));
    let versioned = gw.get(&path);
    assert_eq!(versioned.status, 200);
    assert_eq!(versioned.body, SOURCE.as_bytes());
    assert_eq!(
        versioned.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let gz = gw.get_with("/cometbox.js", "Accept-Encoding: gzip, deflate, br\r\n");
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("Accept-Encoding"));
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&gz.body[..]),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(unzipped, SOURCE.as_bytes());
    // The README's figure is what a browser downloads.
    let readme = include_str!("../README.md");
    let size = gz.body.len();
    assert!(
        readme.contains(&format!("{},{:03} bytes", size / 1000, size % 1000)),
        "README should state the served gzip size, {size} bytes"
    );
    assert_eq!(gw.get("/cometbox-0.0.0.js").status, 404);
}

#[test]
fn the_script_carries_one_allow_origin_even_when_every_origin_is_allowed() {
    let gw = Gateway::start("mailbox.cors-origins = ( \"*\" )\n");
    let resp = gw.get_with("/cometbox.mjs", "Origin: https://app.example\r\n");
    assert_eq!(resp.status, 200);
    let grants = resp
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("access-control-allow-origin"))
        .count();
    assert_eq!(grants, 1, "two grants make browsers refuse the module");
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
}
