//! The browser client, embedded in the binary at build time from the
//! minified builds in `client/` (made from `client/cometbox.js` by
//! `client/build.sh`; a test checks they are current) and served at three
//! URLs: `/cometbox.js` (a classic script defining the global `cometbox`),
//! `/cometbox.mjs` (the ES module form), both short-cached and revalidated
//! by ETag, and `/cometbox-<version>.js`, cached for a year as immutable
//! because its URL changes with every release. Each body is gzipped once,
//! on first use, for browsers that accept it.

use std::io::Write;
use std::sync::OnceLock;

use super::{Body, Outcome, Response};
use crate::http::{self, HttpError, Method, Request, Status};

const CLASSIC_SOURCE: &str = include_str!("../../client/cometbox.min.js");
const MODULE_SOURCE: &str = include_str!("../../client/cometbox.min.mjs");

/// How long browsers may use the unversioned URLs before revalidating: five
/// minutes, so an upgrade reaches pages soon; revalidation is a cheap 304
/// by ETag. Pages that want a long cache use the versioned URL.
const UNVERSIONED_CACHE: &str = "public, max-age=300";

/// The versioned URL never changes its content.
const VERSIONED_CACHE: &str = "public, max-age=31536000, immutable";

#[derive(Debug)]
pub struct ClientScript {
    pub body: &'static [u8],
    /// The same bytes gzipped (best compression, done once).
    pub gzipped: Box<[u8]>,
    /// A strong ETag from the content's SHA-1, so browsers revalidate cheaply.
    pub etag: String,
    pub cache_control: &'static str,
}

impl ClientScript {
    fn new(body: &'static str, cache_control: &'static str) -> ClientScript {
        use sha1::Digest;
        let digest = sha1::Sha1::digest(body.as_bytes());
        let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail.
        gz.write_all(body.as_bytes()).expect("gzip into memory");
        ClientScript {
            body: body.as_bytes(),
            gzipped: gz.finish().expect("gzip into memory").into_boxed_slice(),
            etag: format!("\"{hex}\""),
            cache_control,
        }
    }
}

/// The versioned path, `/cometbox-<version>.js`.
pub fn versioned_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| format!("/cometbox-{}.js", env!("CARGO_PKG_VERSION")))
}

pub fn find(path: &[u8]) -> Option<&'static ClientScript> {
    static CLASSIC: OnceLock<ClientScript> = OnceLock::new();
    static MODULE: OnceLock<ClientScript> = OnceLock::new();
    static VERSIONED: OnceLock<ClientScript> = OnceLock::new();
    let script = match path {
        b"/cometbox.js" => {
            CLASSIC.get_or_init(|| ClientScript::new(CLASSIC_SOURCE, UNVERSIONED_CACHE))
        }
        b"/cometbox.mjs" => {
            MODULE.get_or_init(|| ClientScript::new(MODULE_SOURCE, UNVERSIONED_CACHE))
        }
        p if p == versioned_path().as_bytes() => {
            VERSIONED.get_or_init(|| ClientScript::new(CLASSIC_SOURCE, VERSIONED_CACHE))
        }
        _ => return None,
    };
    Some(script)
}

/// GET or HEAD of the script; 304 when the browser's copy is current.
pub fn respond(req: &Request<'_>, script: &'static ClientScript) -> Result<Outcome, HttpError> {
    if !matches!(req.method(), Method::Get | Method::Head) {
        return Err(HttpError::new(Status::NotFound, "not found"));
    }
    let not_modified = req.if_none_match.is_some_and(|tags| {
        tags.split(|&b| b == b',')
            .any(|t| t.trim_ascii() == script.etag.as_bytes() || t.trim_ascii() == b"*")
    });
    let mut headers = Vec::with_capacity(256);
    headers.extend_from_slice(b"Content-Type: text/javascript; charset=utf-8\r\n");
    http::write_header(
        &mut headers,
        "Cache-Control",
        script.cache_control.as_bytes(),
    );
    // Public code without credentials: any origin may load it, which
    // `<script type="module">` from another origin needs.
    headers.extend_from_slice(b"Access-Control-Allow-Origin: *\r\nVary: Accept-Encoding\r\n");
    http::write_header(&mut headers, "ETag", script.etag.as_bytes());
    if not_modified {
        return Ok(Outcome::Respond(Response {
            status: Status::NotModified,
            headers,
            body: Body::Empty,
            head_only: true,
            grants_any_origin: true,
        }));
    }
    let body: &'static [u8] = if req.accepts_gzip {
        headers.extend_from_slice(b"Content-Encoding: gzip\r\n");
        // 'static: the script lives in a static OnceLock.
        &script.gzipped
    } else {
        script.body
    };
    Ok(Outcome::Respond(Response {
        status: Status::Ok,
        headers,
        body: Body::Static(body),
        head_only: req.method() == Method::Head,
        grants_any_origin: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::tests::request;
    use std::io::Read;

    fn response(raw: &str) -> Response {
        let req = request(raw);
        let script = find(req.path).expect("a script path");
        match respond(&req, script).unwrap() {
            Outcome::Respond(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gzip_is_the_same_script_and_only_when_accepted() {
        let plain = response("GET /cometbox.js HTTP/1.1\r\nHost: a\r\n\r\n");
        let Body::Static(plain_body) = plain.body else {
            panic!()
        };
        assert_eq!(plain_body, CLASSIC_SOURCE.as_bytes());
        let gz =
            response("GET /cometbox.js HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip, br\r\n\r\n");
        assert!(String::from_utf8_lossy(&gz.headers).contains("Content-Encoding: gzip\r\n"));
        let Body::Static(gz_body) = gz.body else {
            panic!()
        };
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(gz_body)
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, CLASSIC_SOURCE.as_bytes());
        assert!(gz_body.len() < CLASSIC_SOURCE.len() / 2);
    }

    #[test]
    fn the_versioned_path_is_immutable() {
        let raw = format!("GET {} HTTP/1.1\r\nHost: a\r\n\r\n", versioned_path());
        let r = response(&raw);
        let headers = String::from_utf8(r.headers).unwrap();
        assert!(headers.contains("immutable"), "{headers}");
        assert!(find(b"/cometbox-0.0.0.js").is_none());
    }
}
