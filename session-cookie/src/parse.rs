//! Finding the session ID in `Cookie` request headers.
//!
//! The parser works on bytes, not `&str`: a `Cookie` header may legally carry
//! obs-text (bytes ≥ 0x80) in *other* cookies, and an analytics cookie with
//! a stray Latin-1 byte must not hide the session cookie beside it. Finding
//! the first ID allocates nothing; listing every candidate allocates only the
//! list. The work is bounded by [`MAX_COOKIE_PAIRS`] and [`MAX_CANDIDATES`]
//! whatever the request holds.

use std::ops::ControlFlow;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use session_core::{MAX_ID_LEN, SessionId};

/// At most this many cookie-pairs, over all `Cookie` headers of a request,
/// are examined; the rest are ignored.
///
/// Browsers keep at most a few hundred cookies per site (Chromium: 180 per
/// domain), so a real request never comes near this; an absurd header (a
/// megabyte of `;`) costs a bounded scan and then `None`.
pub const MAX_COOKIE_PAIRS: usize = 1024;

/// At most this many cookies carrying the wanted name are tried as session
/// IDs; the rest are ignored. A browser sends one per matching path and
/// domain, so a handful at most. It also bounds the list
/// [`session_ids_from_headers`](crate::session_ids_from_headers) returns, and
/// so the store lookups a request can cause: a client that sends this many
/// well-formed IDs naming no session costs this many lookups (each one
/// hash and one keyed read) on every request that reads the session. Sixteen
/// leaves room for one cookie per level of a deep path (a cookie once set
/// without `Path` belongs to the directory of the page that set it) while
/// keeping that cost a small constant; rate-limit anonymous traffic as for
/// any page that reads the store.
pub const MAX_CANDIDATES: usize = 16;

/// The session ID in `headers` under cookie `name`; see
/// [`crate::session_id_from_headers`].
pub(crate) fn session_id_in(headers: &HeaderMap, name: &[u8]) -> Option<SessionId> {
    find_session_id(cookie_headers(headers), name)
}

/// Every distinct session ID in `headers` under cookie `name`, in order; see
/// [`crate::session_ids_from_headers`].
pub(crate) fn session_ids_in(headers: &HeaderMap, name: &[u8]) -> Vec<SessionId> {
    find_session_ids(cookie_headers(headers), name)
}

fn cookie_headers(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes)
}

/// The first cookie called `name` across `headers` (the `Cookie` header
/// values, in order) whose value is a well-formed session ID.
pub(crate) fn find_session_id<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    name: &[u8],
) -> Option<SessionId> {
    let mut first = None;
    scan(headers, name, |id| {
        first = Some(id);
        ControlFlow::Break(())
    });
    first
}

/// Every cookie called `name` across `headers` whose value is a well-formed
/// session ID, in order, each distinct ID once (at its first place). Its
/// first element is what [`find_session_id`] returns.
pub(crate) fn find_session_ids<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    name: &[u8],
) -> Vec<SessionId> {
    let mut ids: Vec<SessionId> = Vec::new();
    scan(headers, name, |id| {
        if !ids.contains(&id) {
            ids.push(id);
        }
        ControlFlow::Continue(())
    });
    ids
}

/// Call `found` with each cookie called `name` across `headers` whose value
/// is a well-formed session ID, in order, until it breaks or a bound is met:
/// at most [`MAX_COOKIE_PAIRS`] pairs and [`MAX_CANDIDATES`] cookies called
/// `name` (well-formed or not) are examined.
///
/// Per cookie-pair (RFC 6265bis §4.2.1 and §5.6): split the header on `;`,
/// split the pair at its first `=` (a pair without `=` is a nameless cookie
/// and never matches), trim spaces and tabs around name and value, compare
/// the name byte for byte (case-sensitively), and remove one pair of
/// surrounding double quotes from the value.
fn scan<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    name: &[u8],
    mut found: impl FnMut(SessionId) -> ControlFlow<()>,
) {
    if name.is_empty() {
        return;
    }
    let mut pairs = 0;
    let mut candidates = 0;
    for header in headers {
        for pair in header.split(|&b| b == b';') {
            pairs += 1;
            if pairs > MAX_COOKIE_PAIRS {
                return;
            }
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (pair_name, value) = (&pair[..eq], &pair[eq + 1..]);
            if trim_ows(pair_name) != name {
                continue;
            }
            candidates += 1;
            if candidates > MAX_CANDIDATES {
                return;
            }
            if let Some(id) = parse_value(trim_ows(value))
                && found(id).is_break()
            {
                return;
            }
        }
    }
}

/// A cookie value as a session ID, or `None` if it is not one.
///
/// Cheap checks come first, so oversized values and bytes outside the
/// base64url alphabet (quotes, spaces, `=`, non-ASCII) are refused before
/// [`SessionId::parse`] decodes and hashes anything.
fn parse_value(value: &[u8]) -> Option<SessionId> {
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    };
    if value.len() > MAX_ID_LEN
        || !value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    SessionId::parse(text).ok()
}

/// `bytes` without leading and trailing optional whitespace (SP / HTAB).
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{session_id_from_headers, session_ids_from_headers};

    /// A `HeaderMap` with one `Cookie` header per entry.
    pub(crate) fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(COOKIE, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn raw_headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(COOKIE, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    fn id() -> SessionId {
        SessionId::generate().unwrap()
    }

    #[test]
    fn finds_the_cookie_among_others() {
        let id = id();
        let map = headers(&[&format!("a=1; sid={}; b=2", id.as_str())]);
        assert_eq!(session_id_from_headers(&map, "sid"), Some(id));
    }

    #[test]
    fn no_cookie_header_or_empty_header_gives_none() {
        assert_eq!(session_id_from_headers(&HeaderMap::new(), "sid"), None);
        assert_eq!(session_id_from_headers(&headers(&[""]), "sid"), None);
        assert_eq!(session_id_from_headers(&headers(&[";;; ;"]), "sid"), None);
        assert_eq!(session_id_from_headers(&headers(&["sid="]), "sid"), None);
        assert_eq!(session_id_from_headers(&headers(&["sid"]), "sid"), None);
    }

    #[test]
    fn every_cookie_header_is_read() {
        let id = id();
        let map = headers(&["a=1; b=2", "c=3", &format!("sid={}", id.as_str()), "d=4"]);
        assert_eq!(session_id_from_headers(&map, "sid"), Some(id));
    }

    #[test]
    fn other_headers_are_not_read() {
        let id = id();
        let mut map = HeaderMap::new();
        map.append("x-cookie", format!("sid={}", id.as_str()).parse().unwrap());
        map.append(
            http::header::SET_COOKIE,
            format!("sid={}", id.as_str()).parse().unwrap(),
        );
        assert_eq!(session_id_from_headers(&map, "sid"), None);
    }

    #[test]
    fn first_valid_of_duplicate_names_wins_even_after_a_bad_one() {
        let (first, second) = (id(), id());
        for bad in ["", "junk", "\"junk\"", "AAAA", "%41%41"] {
            let map = headers(&[&format!(
                "sid={bad}; sid={}; sid={}",
                first.as_str(),
                second.as_str()
            )]);
            assert_eq!(
                session_id_from_headers(&map, "sid"),
                Some(first.clone()),
                "{bad:?}"
            );
        }
        // Across headers too: a stale path-specific cookie, then the current one.
        let map = headers(&["sid=stale!", &format!("sid={}", second.as_str())]);
        assert_eq!(session_id_from_headers(&map, "sid"), Some(second));
    }

    #[test]
    fn every_well_formed_candidate_is_listed_in_order() {
        let (stale, live, other) = (id(), id(), id());
        // A stale cookie for a longer path first, then the current one, in
        // one header or in two; junk and other names are skipped.
        for map in [
            headers(&[&format!(
                "sid={}; sid=junk; x={}; sid={}",
                stale.as_str(),
                other.as_str(),
                live.as_str()
            )]),
            headers(&[
                &format!("sid={}", stale.as_str()),
                "sid=junk",
                &format!("sid=\"{}\"", live.as_str()),
            ]),
        ] {
            assert_eq!(
                session_ids_from_headers(&map, "sid"),
                [stale.clone(), live.clone()]
            );
            assert_eq!(session_id_from_headers(&map, "sid"), Some(stale.clone()));
        }
        assert!(session_ids_from_headers(&HeaderMap::new(), "sid").is_empty());
        assert!(session_ids_from_headers(&headers(&["sid=junk"]), "sid").is_empty());
        assert!(session_ids_from_headers(&headers(&["sid=x"]), "a b").is_empty());
    }

    #[test]
    fn a_repeated_id_is_listed_once_at_its_first_place() {
        let (a, b) = (id(), id());
        let map = headers(&[&format!(
            "sid={}; sid={}; sid={}",
            a.as_str(),
            b.as_str(),
            a.as_str()
        )]);
        assert_eq!(session_ids_from_headers(&map, "sid"), [a, b]);
    }

    #[test]
    fn the_candidate_list_is_bounded() {
        let ids: Vec<SessionId> = (0..MAX_CANDIDATES + 4).map(|_| id()).collect();
        let header = ids
            .iter()
            .map(|id| format!("sid={}", id.as_str()))
            .collect::<Vec<_>>()
            .join("; ");
        let listed = session_ids_from_headers(&headers(&[&header]), "sid");
        assert_eq!(listed, ids[..MAX_CANDIDATES]);
        // Junk counts against the bound too, as for the first ID.
        let junk = "sid=junk;".repeat(MAX_CANDIDATES - 1);
        let map = headers(&[&format!(
            "{junk}sid={}; sid={}",
            ids[0].as_str(),
            ids[1].as_str()
        )]);
        assert_eq!(session_ids_from_headers(&map, "sid"), ids[..1]);
    }

    #[test]
    fn whitespace_around_pairs_names_and_values_is_ignored() {
        let id = id();
        let v = id.as_str();
        for header in [
            format!("sid={v}"),
            format!("a=1;sid={v}"),
            format!("a=1;  sid={v}  "),
            format!("a=1;\tsid={v}\t;b=2"),
            format!("sid = {v}"),
            format!(" sid\t=\t{v} ; a=1"),
            format!("a=1 ;sid={v};"),
        ] {
            assert_eq!(
                session_id_from_headers(&headers(&[&header]), "sid"),
                Some(id.clone()),
                "{header:?}"
            );
        }
    }

    #[test]
    fn whitespace_inside_a_value_is_rejected() {
        let v = id();
        let (head, tail) = v.as_str().split_at(10);
        let map = headers(&[&format!("sid={head} {tail}")]);
        assert_eq!(session_id_from_headers(&map, "sid"), None);
    }

    #[test]
    fn one_pair_of_quotes_around_a_valid_id_is_removed() {
        let id = id();
        let map = headers(&[&format!("sid=\"{}\"", id.as_str())]);
        assert_eq!(session_id_from_headers(&map, "sid"), Some(id.clone()));
        let map = headers(&[&format!("sid= \"{}\" ", id.as_str())]);
        assert_eq!(session_id_from_headers(&map, "sid"), Some(id));
    }

    #[test]
    fn quoted_junk_is_rejected() {
        let v = id();
        let v = v.as_str();
        for value in [
            format!("\"\"{v}\"\""),
            format!("\"{v}"),
            format!("{v}\""),
            format!("\"{v}\"x"),
            format!("\" {v}\""),
            format!("'{v}'"),
            "\"\"".to_owned(),
            "\"".to_owned(),
            "\"junk\"".to_owned(),
        ] {
            let map = headers(&[&format!("sid={value}")]);
            assert_eq!(session_id_from_headers(&map, "sid"), None, "{value:?}");
        }
    }

    #[test]
    fn values_outside_the_id_alphabet_are_rejected() {
        let v = id();
        let v = v.as_str();
        for value in [
            format!("{v}="),
            format!("{v}%3D"),
            format!("{}+{}", &v[..20], &v[21..]),
            format!("{}/{}", &v[..20], &v[21..]),
            format!("{}.{}", &v[..20], &v[21..]),
            format!("{v},x"),
        ] {
            let map = headers(&[&format!("sid={value}")]);
            assert_eq!(session_id_from_headers(&map, "sid"), None, "{value:?}");
        }
    }

    #[test]
    fn equals_signs_inside_a_value_belong_to_the_value() {
        let id = id();
        // Split at the first '=' only: "sid" has the value "=<id>", which is
        // not an ID, and a cookie called "x" whose value contains "sid=..."
        // does not count as "sid".
        let map = headers(&[&format!("sid=={}", id.as_str())]);
        assert_eq!(session_id_from_headers(&map, "sid"), None);
        let map = headers(&[&format!("x=sid={}", id.as_str())]);
        assert_eq!(session_id_from_headers(&map, "sid"), None);
        // A base64 padding character makes a value invalid, not truncated.
        let map = headers(&[&format!("sid={}==", id.as_str())]);
        assert_eq!(session_id_from_headers(&map, "sid"), None);
        // And the parser keeps going past such a value.
        let map = headers(&[&format!("sid={}=x; sid={}", id.as_str(), id.as_str())]);
        assert_eq!(session_id_from_headers(&map, "sid"), Some(id));
    }

    #[test]
    fn names_match_exactly_and_case_sensitively() {
        let id = id();
        let v = id.as_str();
        for other in [
            "Sid",
            "SID",
            "si",
            "sidx",
            "xsid",
            "s id",
            "_sid",
            "sid-",
            "__Host-sid",
        ] {
            let map = headers(&[&format!("{other}={v}")]);
            assert_eq!(session_id_from_headers(&map, "sid"), None, "{other:?}");
        }
        // Prefix and suffix names beside the real one do not get in the way.
        let map = headers(&[&format!(
            "si=junk; sidx=junk; xsid=junk; sid={v}; sid2=junk"
        )]);
        assert_eq!(session_id_from_headers(&map, "sid"), Some(id));
    }

    #[test]
    fn nameless_cookies_never_match() {
        let id = id();
        let map = headers(&[id.as_str(), &format!("={}", id.as_str())]);
        assert_eq!(session_id_from_headers(&map, "sid"), None);
        assert_eq!(session_id_from_headers(&map, ""), None);
    }

    #[test]
    fn invalid_wanted_names_match_nothing() {
        let id = id();
        let map = headers(&[&format!("a b={}; a;b={}", id.as_str(), id.as_str())]);
        assert_eq!(session_id_from_headers(&map, "a b"), None);
        assert_eq!(session_id_from_headers(&map, "a;b"), None);
    }

    #[test]
    fn oversized_values_are_skipped_before_any_parsing() {
        let id = id();
        let huge = "A".repeat(MAX_ID_LEN + 1);
        assert!(parse_value(huge.as_bytes()).is_none());
        assert!(parse_value(format!("\"{huge}\"").as_bytes()).is_none());
        // A 256-character value is within bounds (and well-formed).
        let longest = "A".repeat(MAX_ID_LEN);
        assert!(parse_value(longest.as_bytes()).is_some());
        let map = headers(&[&format!("sid={huge}; sid={}", id.as_str())]);
        assert_eq!(session_id_from_headers(&map, "sid"), Some(id));
    }

    #[test]
    fn non_utf8_bytes_in_another_cookie_do_not_hide_the_session() {
        let id = id();
        let mut header = b"tracking=caf\xe9; junk=\xff\xfe\x80; ".to_vec();
        header.extend_from_slice(format!("sid={}", id.as_str()).as_bytes());
        header.extend_from_slice(b"; after=\xc3\x28");
        let map = raw_headers(&[&header]);
        assert!(
            map.get(COOKIE).unwrap().to_str().is_err(),
            "the header is not visible ASCII"
        );
        assert_eq!(session_id_from_headers(&map, "sid"), Some(id.clone()));

        // Also when the odd bytes are in a separate header before it.
        let map = raw_headers(&[b"x=\xff", format!("sid={}", id.as_str()).as_bytes()]);
        assert_eq!(session_id_from_headers(&map, "sid"), Some(id));
    }

    #[test]
    fn non_utf8_or_non_ascii_session_values_are_rejected() {
        let id = id();
        let mut value = b"sid=".to_vec();
        value.extend_from_slice(id.as_str().as_bytes());
        value.push(0xe9);
        assert_eq!(
            session_id_from_headers(&raw_headers(&[&value]), "sid"),
            None
        );
        let map = headers(&[&format!("sid={}é", id.as_str())]);
        assert_eq!(session_id_from_headers(&map, "sid"), None);
    }

    #[test]
    fn work_is_bounded_by_the_number_of_pairs() {
        let id = id();
        let filler = "x=1;".repeat(MAX_COOKIE_PAIRS - 1);
        let within = format!("{filler}sid={}", id.as_str());
        assert_eq!(
            session_id_from_headers(&headers(&[&within]), "sid"),
            Some(id.clone())
        );
        let beyond = format!("{filler}x=1;sid={}", id.as_str());
        assert_eq!(session_id_from_headers(&headers(&[&beyond]), "sid"), None);
        // Empty pairs and empty headers count too.
        let semicolons = ";".repeat(MAX_COOKIE_PAIRS);
        let map = headers(&[&semicolons, &format!("sid={}", id.as_str())]);
        assert_eq!(session_id_from_headers(&map, "sid"), None);
    }

    #[test]
    fn work_is_bounded_by_the_number_of_same_name_candidates() {
        let id = id();
        let junk = "sid=junk;".repeat(MAX_CANDIDATES - 1);
        let within = format!("{junk}sid={}", id.as_str());
        assert_eq!(
            session_id_from_headers(&headers(&[&within]), "sid"),
            Some(id.clone())
        );
        let beyond = format!("{junk}sid=junk;sid={}", id.as_str());
        assert_eq!(session_id_from_headers(&headers(&[&beyond]), "sid"), None);
    }

    #[test]
    fn trim_ows_trims_only_spaces_and_tabs() {
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(trim_ows(b" a b\t"), b"a b");
        assert_eq!(trim_ows(b"\x0ba\r"), b"\x0ba\r");
    }

    /// xorshift64*: a small deterministic generator, so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }

        fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
            items[self.below(items.len())]
        }
    }

    /// Appends to `out` a random piece of something that looks like a
    /// `Cookie` header: mostly cookie-pairs built from tricky names, values
    /// and separators, sometimes raw bytes.
    fn random_header(rng: &mut Rng, valids: &[&[u8]], out: &mut Vec<u8>) {
        const NAMES: &[&[u8]] = &[
            b"sid", b"sid", b"Sid", b"sid2", b"xsid", b"", b" sid ", b"\tsid", b"s\xffid",
        ];
        const SEPARATORS: &[&[u8]] = &[b";", b"; ", b" ;", b";;", b";\t", b"", b"="];
        const JUNK: &[&[u8]] = &[
            b"\"",
            b"=",
            b" ",
            b"\xff",
            b"\xc3\xa9",
            b"\x00",
            b"\r\n",
            b"\x7f",
            b"==",
            b"-_",
            b"%3D",
            b"AAAAAAAAAAAAAAAAAAAAAA",
            b"AAAAAAAAAAAAAAAAAAAAAB",
        ];
        let long = vec![b'A'; MAX_ID_LEN + 1 + rng.below(3)];
        for _ in 0..rng.below(8) {
            match rng.below(8) {
                // Arbitrary bytes.
                0 => {
                    for _ in 0..rng.below(16) {
                        out.push(rng.next().to_le_bytes()[0]);
                    }
                }
                // A junk fragment.
                1 => out.extend_from_slice(rng.pick(JUNK)),
                // A cookie-pair with a tricky value.
                _ => {
                    let valid = rng.pick(valids);
                    out.extend_from_slice(rng.pick(NAMES));
                    out.push(b'=');
                    let quoted = rng.below(4) == 0;
                    if quoted {
                        out.push(b'"');
                    }
                    match rng.below(5) {
                        0 | 1 => out.extend_from_slice(valid),
                        2 => out.extend_from_slice(&long),
                        3 => out.extend_from_slice(&valid[..rng.below(valid.len())]),
                        _ => {
                            out.extend_from_slice(valid);
                            out.extend_from_slice(rng.pick(JUNK));
                        }
                    }
                    if quoted && rng.below(4) != 0 {
                        out.push(b'"');
                    }
                }
            }
            out.extend_from_slice(rng.pick(SEPARATORS));
        }
    }

    /// An independent, straightforward statement of the parsing rules, to
    /// compare the real parser against: every candidate, in order, each
    /// distinct ID once.
    fn reference_list(headers: &[Vec<u8>], name: &[u8]) -> Vec<SessionId> {
        fn trim(mut s: &[u8]) -> &[u8] {
            while let [b' ' | b'\t', rest @ ..] = s {
                s = rest;
            }
            while let [rest @ .., b' ' | b'\t'] = s {
                s = rest;
            }
            s
        }
        headers
            .iter()
            .flat_map(|header| header.split(|&b| b == b';'))
            .take(MAX_COOKIE_PAIRS)
            .filter_map(|pair| {
                let mut parts = pair.splitn(2, |&b| b == b'=');
                let (pair_name, value) = (parts.next()?, parts.next()?);
                (trim(pair_name) == name).then(|| trim(value))
            })
            .take(MAX_CANDIDATES)
            .filter_map(|value| {
                let value = value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value);
                SessionId::parse(std::str::from_utf8(value).ok()?).ok()
            })
            .fold(Vec::new(), |mut ids, id| {
                if !ids.contains(&id) {
                    ids.push(id);
                }
                ids
            })
    }

    /// Many random headers never panic the parser; it agrees with
    /// [`reference_list`], and the first ID is the head of the list; whatever it returns is an
    /// ID that round-trips through `SessionId::parse` and appears in the
    /// input; and the `HeaderMap` entry point agrees with the byte parser.
    #[test]
    fn random_bytes_never_panic_and_only_round_tripping_ids_come_back() {
        let (one, two) = (id(), id());
        let valids = [one.as_str().as_bytes(), two.as_str().as_bytes()];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut found, mut several, mut through_header_map) = (0, 0, 0);
        for _ in 0..20_000 {
            let headers: Vec<Vec<u8>> = (0..1 + rng.below(3))
                .map(|_| {
                    let mut header = Vec::new();
                    random_header(&mut rng, &valids, &mut header);
                    header
                })
                .collect();

            let result = find_session_id(headers.iter().map(Vec::as_slice), b"sid");
            let list = find_session_ids(headers.iter().map(Vec::as_slice), b"sid");
            assert_eq!(list, reference_list(&headers, b"sid"), "{headers:?}");
            assert_eq!(result.as_ref(), list.first(), "{headers:?}");
            assert!(list.len() <= MAX_CANDIDATES);
            if list.len() > 1 {
                several += 1;
            }
            if let Some(id) = &result {
                found += 1;
                let text = id.as_str();
                assert_eq!(&SessionId::parse(text).unwrap(), id);
                assert!(text.len() <= MAX_ID_LEN);
                let needle = text.as_bytes();
                assert!(
                    headers
                        .iter()
                        .any(|h| h.windows(needle.len()).any(|w| w == needle)),
                    "returned an ID that is not in the input"
                );
            }

            // The same input through a real HeaderMap, where the bytes allow it.
            let values: Result<Vec<HeaderValue>, _> =
                headers.iter().map(|h| HeaderValue::from_bytes(h)).collect();
            if let Ok(values) = values {
                through_header_map += 1;
                let mut map = HeaderMap::new();
                for value in values {
                    map.append(COOKIE, value);
                }
                assert_eq!(session_id_from_headers(&map, "sid"), result);
                assert_eq!(session_ids_from_headers(&map, "sid"), list);
            }
        }
        assert!(
            found > 1_000,
            "the generator should often produce a valid cookie (found {found})"
        );
        assert!(
            several > 100,
            "the generator should often produce several candidates (found {several})"
        );
        assert!(
            through_header_map > 1_000,
            "too few inputs were valid header values ({through_header_map})"
        );
    }
}
