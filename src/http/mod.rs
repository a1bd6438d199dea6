//! HTTP/1.x for the gateway: request heads in ([`parse`]), response heads
//! out ([`response`]), the one error type ([`error`]) and CORS ([`cors`]).
//! Pure functions over byte slices: no sockets here.

pub mod chunked;
pub mod cors;
pub mod error;
pub mod parse;
pub mod response;

pub use cors::Cors;
pub use error::HttpError;
pub use parse::{Parsed, Request, parse_request, percent_decode, query_pairs};
pub use response::{
    DateCache, write_chunk_header, write_connection, write_content_length, write_head, write_header,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Options,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok = 200,
    NoContent = 204,
    NotModified = 304,
    SwitchingProtocols = 101,
    BadRequest = 400,
    Unauthorized = 401,
    Forbidden = 403,
    NotFound = 404,
    MethodNotAllowed = 405,
    RequestTimeout = 408,
    PayloadTooLarge = 413,
    UpgradeRequired = 426,
    HeaderFieldsTooLarge = 431,
    NotImplemented = 501,
    ServiceUnavailable = 503,
    VersionNotSupported = 505,
}

impl Status {
    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NoContent => "No Content",
            Status::NotModified => "Not Modified",
            Status::SwitchingProtocols => "Switching Protocols",
            Status::BadRequest => "Bad Request",
            Status::Unauthorized => "Unauthorized",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::UpgradeRequired => "Upgrade Required",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::NotImplemented => "Not Implemented",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}
