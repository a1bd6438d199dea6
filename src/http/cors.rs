//! Which origins may read a mailbox from a page of another site: the
//! `Access-Control-Allow-*` headers, and the Origin checks that browsers do
//! not make for us (WebSocket, cookie-authenticated JSONP).

/// Which `Access-Control-Allow-Origin` a response carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cors {
    None,
    /// Index into `mailbox.cors-origins` of the matching origin.
    Listed(u16),
    /// `*` is configured: the request's origin is echoed (so credentials,
    /// such as a token cookie, keep working).
    Any(Box<str>),
}

impl Cors {
    pub fn grant(origin: Option<&[u8]>, allowed: &[String]) -> Cors {
        let Some(origin) = origin else {
            return Cors::None;
        };
        if let Some(i) = allowed.iter().position(|a| a.as_bytes() == origin) {
            return Cors::Listed(i as u16);
        }
        if allowed.iter().any(|a| a == "*")
            && let Ok(text) = std::str::from_utf8(origin)
            && text.bytes().all(|b| b.is_ascii_graphic())
        {
            return Cors::Any(text.into());
        }
        Cors::None
    }

    pub fn write_headers(&self, out: &mut Vec<u8>, allowed: &[String]) {
        let origin: &str = match self {
            Cors::None => return,
            Cors::Listed(i) => &allowed[*i as usize],
            Cors::Any(origin) => origin,
        };
        super::write_header(out, "Access-Control-Allow-Origin", origin.as_bytes());
        out.extend_from_slice(b"Access-Control-Allow-Credentials: true\r\nVary: Origin\r\n");
    }
}

/// Whether `origin` (an `Origin` value, or a `Referer` URL) names the same
/// site as the request's `Host`, or one of `allowed` (`mailbox.cors-origins`;
/// `*` allows all). Used where the browser applies no CORS itself.
pub fn origin_allowed(origin: &[u8], host: Option<&[u8]>, allowed: &[String]) -> bool {
    let origin = origin.trim_ascii();
    // `scheme://authority[/path…]` → `scheme://authority`
    let Some(scheme_end) = origin.windows(3).position(|w| w == b"://") else {
        return false;
    };
    let authority_start = scheme_end + 3;
    let authority_end = origin[authority_start..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .map_or(origin.len(), |i| authority_start + i);
    let site = &origin[..authority_end];
    let authority = &origin[authority_start..authority_end];
    if host.is_some_and(|h| authority.eq_ignore_ascii_case(h)) {
        return true;
    }
    allowed.iter().any(|a| a == "*" || a.as_bytes() == site)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_site_and_listed_origins_are_allowed() {
        let listed = vec!["https://app.example".to_string()];
        let host = Some(&b"push.example:8080"[..]);
        assert!(origin_allowed(b"http://push.example:8080", host, &[]));
        assert!(origin_allowed(
            b"https://push.example:8080/page?x#y",
            host,
            &[]
        ));
        assert!(origin_allowed(b"https://app.example", host, &listed));
        assert!(origin_allowed(b"https://app.example/chat", host, &listed));
        assert!(!origin_allowed(b"https://evil.example", host, &listed));
        assert!(!origin_allowed(b"https://app.example.evil", host, &listed));
        assert!(!origin_allowed(b"null", host, &listed));
        assert!(origin_allowed(
            b"https://any.example",
            host,
            &["*".to_string()]
        ));
    }
}
