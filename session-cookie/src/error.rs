//! The error a cookie configuration can be rejected with.

/// Why a [`CookieConfigBuilder`](crate::CookieConfigBuilder) was refused.
///
/// Every rule is checked once, by
/// [`CookieConfigBuilder::build`](crate::CookieConfigBuilder::build), so a
/// [`CookieConfig`](crate::CookieConfig) that exists can only produce
/// well-formed `Set-Cookie` headers (see there for the two things it cannot
/// check). Each message says what is wrong and how to fix it.
///
/// This is a start-up (configuration) error, not a session error, so it is
/// deliberately *not* converted into [`session_core::Error`], whose variants
/// describe session operations (its `Backend` variant would even mark it
/// retryable). Propagate it with `?` into your application's own error type,
/// `Box<dyn std::error::Error>` or `anyhow::Error`; it implements
/// [`std::error::Error`], `Send` and `Sync`.
///
/// The enum is `#[non_exhaustive]`: new rules may be added.
///
/// ```
/// use session_cookie::{CookieConfig, CookieConfigError};
///
/// let err = CookieConfig::builder("__Host-sid").path("/app").build().unwrap_err();
/// assert_eq!(err, CookieConfigError::HostPrefixRequiresRootPath);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieConfigError {
    /// The cookie name is empty.
    #[error("the cookie name is empty; choose a name such as \"__Host-session\"")]
    EmptyName,

    /// The cookie name contains a byte that is not allowed in a token
    /// (RFC 9110 §5.6.2), such as a space, `=`, `;`, a quote, a control
    /// character or a non-ASCII byte.
    #[error(
        "the cookie name has a character that is not allowed at byte {position}; \
         a cookie name may only use ASCII letters, digits and !#$%&'*+-.^_`|~"
    )]
    InvalidName {
        /// Zero-based byte offset of the first offending byte.
        position: usize,
    },

    /// The cookie name is so long that name and session ID together could
    /// exceed the 4096 bytes browsers accept for a cookie.
    #[error(
        "the cookie name is {len} bytes long; at most {max} are allowed, so that name and session ID fit in 4096 bytes"
    )]
    NameTooLong {
        /// Length of the name given.
        len: usize,
        /// The longest name allowed ([`MAX_NAME_LEN`](crate::MAX_NAME_LEN)).
        max: usize,
    },

    /// A name with a prefix (`__Secure-`, `__Host-`, `__Http-`,
    /// `__Host-Http-`) was configured without the `Secure` attribute;
    /// browsers ignore such cookies (RFC 6265bis §4.1.3).
    #[error(
        "a cookie whose name starts with {prefix:?} must be Secure; remove `.secure(false)` or choose a name without the prefix"
    )]
    PrefixRequiresSecure {
        /// The prefix found in the name (as the RFC spells it).
        prefix: &'static str,
    },

    /// An `__Http-` or `__Host-Http-` name was configured without the
    /// `HttpOnly` attribute; browsers that know these prefixes ignore such
    /// cookies (recent drafts of RFC 6265bis, §4.1.3).
    #[error(
        "a cookie whose name starts with {prefix:?} must be HttpOnly; remove `.http_only(false)` or choose a name without the prefix"
    )]
    PrefixRequiresHttpOnly {
        /// The prefix found in the name (as the RFC spells it).
        prefix: &'static str,
    },

    /// A `__Host-` (or `__Host-Http-`) name was configured with a path other
    /// than `/`; browsers ignore such cookies (RFC 6265bis §4.1.3.2).
    #[error(
        "a cookie whose name starts with \"__Host-\" must have Path=/; remove `.path(..)` or use the \"__Secure-\" (or \"__Http-\") prefix instead"
    )]
    HostPrefixRequiresRootPath,

    /// A `__Host-` (or `__Host-Http-`) name was configured with a `Domain`;
    /// browsers ignore such cookies (RFC 6265bis §4.1.3.2).
    #[error(
        "a cookie whose name starts with \"__Host-\" must not have a Domain; remove `.domain(..)` or use the \"__Secure-\" (or \"__Http-\") prefix instead"
    )]
    HostPrefixForbidsDomain,

    /// `SameSite=None` was configured without `Secure`; browsers reject such
    /// cookies.
    #[error(
        "SameSite=None requires the Secure attribute; remove `.secure(false)` or use SameSite::Lax"
    )]
    SameSiteNoneRequiresSecure,

    /// `Partitioned` (CHIPS) was configured without `Secure`; browsers reject
    /// such cookies.
    #[error(
        "a Partitioned cookie requires the Secure attribute; remove `.secure(false)` or `.partitioned(true)`"
    )]
    PartitionedRequiresSecure,

    /// The `Path` attribute is not usable.
    #[error("invalid cookie Path: {reason}")]
    InvalidPath {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The `Domain` attribute is not usable.
    #[error("invalid cookie Domain: {reason}")]
    InvalidDomain {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A `Max-Age` shorter than one second was configured. `Max-Age=0` tells
    /// the browser to delete the cookie at once, so the session would never
    /// stick.
    #[error(
        "Max-Age must be at least one second (Max-Age=0 deletes the cookie); use `.browser_session()` for a cookie without Max-Age"
    )]
    MaxAgeTooShort,
}
