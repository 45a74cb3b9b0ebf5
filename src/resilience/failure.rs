//! The kind of an infrastructure failure, in words that are safe to show to
//! anyone (DESIGN.md §3: public health names a failure by its kind, never
//! with raw error text). A driver's error text carries URLs, host names,
//! addresses and sometimes user names; it stays in the logs and the admin
//! views, and the public view gets one of a fixed set of words instead.
//! The kind is decided where the error is still typed (the stores'
//! `classify`, the IdP client), not by reading text back.
//!
//! `GuardedError` is the other half: what a `DependencyGuard` must know of
//! a caller's error type (failsafe's failure predicate). Only what it calls
//! an infrastructure failure counts against a breaker; every other error is
//! an answer, and an answer is a success.

use serde::Serialize;
use std::error::Error;
use std::io;
use std::time::Duration;

/// An error type that calls through a `DependencyGuard` may end in.
pub trait GuardedError: Sized {
    /// The infrastructure failure this error reports (its public kind and
    /// its full text), or `None` when the dependency answered.
    fn failure(&self) -> Option<(FailureKind, &str)>;

    /// The guard's timeout ended the call: `reason` says after how long.
    fn timed_out(dependency: &'static str, reason: String) -> Self;

    /// The breaker refused the call before it started.
    fn rejected(dependency: &'static str, retry_after: Duration) -> Self;

    /// Does this error count against the breaker?
    fn is_infrastructure(&self) -> bool {
        self.failure().is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FailureKind {
    /// No answer within the dependency's timeout.
    Timeout,
    /// The connection was refused (nothing listening).
    Refused,
    /// An open connection was reset, closed or broken.
    Reset,
    /// The TLS handshake or certificate check failed.
    Tls,
    /// The host could not be reached or resolved.
    Unreachable,
    /// An HTTP dependency answered 5xx.
    Http5xx,
    /// An HTTP dependency answered another non-success status.
    HttpStatus,
    /// The answer could not be understood (bad protocol, bad document).
    InvalidResponse,
    /// Every pooled connection was busy for the whole wait.
    PoolExhausted,
    /// The server answered that it cannot serve now (shutting down,
    /// loading, read-only, busy, locked).
    ServerUnavailable,
    /// A bounded queue of ours is full.
    QueueFull,
    /// A PostgreSQL standby refused a write (SQLSTATE 25006), or no host is
    /// out of recovery: the primary is gone until one is promoted.
    Standby,
    /// None of the above.
    Other,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Refused => "refused",
            FailureKind::Reset => "reset",
            FailureKind::Tls => "tls",
            FailureKind::Unreachable => "unreachable",
            FailureKind::Http5xx => "http 5xx",
            FailureKind::HttpStatus => "http status",
            FailureKind::InvalidResponse => "invalid response",
            FailureKind::PoolExhausted => "pool exhausted",
            FailureKind::ServerUnavailable => "server unavailable",
            FailureKind::QueueFull => "queue full",
            FailureKind::Standby => "standby",
            FailureKind::Other => "error",
        }
    }

    pub fn of_io(kind: io::ErrorKind) -> Self {
        use io::ErrorKind::*;
        match kind {
            ConnectionRefused => FailureKind::Refused,
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => {
                FailureKind::Reset
            }
            TimedOut | WouldBlock => FailureKind::Timeout,
            HostUnreachable | NetworkUnreachable | AddrNotAvailable | NetworkDown => {
                FailureKind::Unreachable
            }
            _ => FailureKind::Other,
        }
    }

    /// The kind of the first `io::Error` in `error`'s source chain (where
    /// clients such as reqwest keep the reason a connection failed).
    pub fn of_error(error: &(dyn Error + 'static)) -> Self {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                let kind = Self::of_io(io.kind());
                if kind != FailureKind::Other {
                    return kind;
                }
            }
            current = e.source();
        }
        FailureKind::Other
    }

    /// The kind of an HTTP status that is not a success.
    pub fn of_status(status: u16) -> Self {
        if (500..600).contains(&status) {
            FailureKind::Http5xx
        } else {
            FailureKind::HttpStatus
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request for url (http://127.0.0.1:9/jwks)")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_kind_is_found_under_wrapping_errors() {
        let e = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(FailureKind::of_error(&e), FailureKind::Refused);
        let e = Wrapper(io::Error::other("weird"));
        assert_eq!(FailureKind::of_error(&e), FailureKind::Other);
        assert_eq!(FailureKind::of_status(502).as_str(), "http 5xx");
        assert_eq!(FailureKind::of_status(404).as_str(), "http status");
    }
}
