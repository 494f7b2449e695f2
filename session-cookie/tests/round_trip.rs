//! What this crate writes into `Set-Cookie` parses back with the `cookie`
//! crate's parser, and the `name=value` a browser would then send finds the
//! same session again.

use std::time::Duration;

use cookie::Cookie;
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, Request};
use session_cookie::{
    CookieConfig, SameSite, session_cookie, session_id_from_headers, session_id_from_request,
};
use session_core::SessionId;

/// The `Cookie` request header a browser would send back for `set_cookie`.
fn browser_sends(set_cookie: &str) -> HeaderMap {
    let cookie = Cookie::parse(set_cookie).expect("a Set-Cookie value the cookie crate parses");
    let mut headers = HeaderMap::new();
    headers.append(COOKIE, HeaderValue::from_static("theme=dark"));
    headers.append(
        COOKIE,
        format!("{}={}", cookie.name(), cookie.value())
            .parse()
            .expect("name=value of a cookie is a valid header value"),
    );
    headers
}

#[test]
fn seed_session_cookie_round_trips() {
    let id = SessionId::generate().unwrap();
    let text = session_cookie(&id, "sid", 1800);
    let cookie = Cookie::parse(text.as_str()).unwrap();
    assert_eq!(cookie.name_value(), ("sid", id.as_str()));
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(
        cookie.max_age(),
        Some(cookie::time::Duration::seconds(1800))
    );
    assert_eq!(cookie.secure(), None);

    assert_eq!(
        session_id_from_headers(&browser_sends(&text), "sid"),
        Some(id.clone())
    );
    let request = Request::builder()
        .header(COOKIE, format!("{}={}", cookie.name(), cookie.value()))
        .body(())
        .unwrap();
    assert_eq!(session_id_from_request(&request, "sid"), Some(id));
}

#[test]
fn every_config_combination_round_trips() {
    let id = SessionId::generate().unwrap();
    let mut built = 0;
    for name in [
        "sid",
        "__Secure-sid",
        "__Host-sid",
        "__Http-sid",
        "__Host-Http-sid",
    ] {
        for secure in [true, false] {
            for same_site in [SameSite::Strict, SameSite::Lax, SameSite::None] {
                for (path, domain) in [("/", None), ("/app", Some("example.com"))] {
                    for max_age in [None, Some(Duration::from_secs(86_400))] {
                        for partitioned in [false, true] {
                            let mut builder = CookieConfig::builder(name)
                                .secure(secure)
                                .same_site(same_site)
                                .path(path)
                                .partitioned(partitioned);
                            if let Some(domain) = domain {
                                builder = builder.domain(domain);
                            }
                            if let Some(max_age) = max_age {
                                builder = builder.max_age(max_age);
                            }
                            // Invalid combinations are refused; that they are
                            // refused for the right reason is tested per rule.
                            let Ok(config) = builder.build() else {
                                continue;
                            };
                            built += 1;

                            let text = config.set_cookie(&id);
                            assert_eq!(config.set_cookie_header(&id), text.as_str());
                            let cookie = Cookie::parse(text.as_str()).unwrap();
                            assert_eq!(cookie.name_value(), (name, id.as_str()), "{text}");
                            assert_eq!(cookie.secure().unwrap_or(false), secure, "{text}");
                            assert_eq!(cookie.http_only(), Some(true), "{text}");
                            assert_eq!(
                                cookie.same_site().map(|s| s.to_string()),
                                Some(same_site.to_string())
                            );
                            assert_eq!(cookie.path(), Some(path), "{text}");
                            assert_eq!(cookie.domain(), domain, "{text}");
                            assert_eq!(
                                cookie.max_age(),
                                max_age.map(|d| cookie::time::Duration::seconds(
                                    d.as_secs().try_into().unwrap()
                                ))
                            );
                            assert_eq!(
                                cookie.partitioned().unwrap_or(false),
                                partitioned,
                                "{text}"
                            );
                            assert_eq!(cookie.expires(), None, "{text}");

                            assert_eq!(
                                config.session_id_from_headers(&browser_sends(&text)),
                                Some(id.clone())
                            );
                            assert_eq!(
                                session_id_from_headers(&browser_sends(&text), name),
                                Some(id.clone())
                            );

                            let removal = Cookie::parse(config.removal_cookie()).unwrap();
                            assert_eq!(removal.name_value(), (name, ""));
                            assert_eq!(removal.path(), cookie.path());
                            assert_eq!(removal.domain(), cookie.domain());
                            assert_eq!(removal.secure(), cookie.secure());
                            assert_eq!(removal.same_site(), cookie.same_site());
                            assert_eq!(removal.partitioned(), cookie.partitioned());
                            assert_eq!(removal.max_age(), Some(cookie::time::Duration::ZERO));
                            assert_eq!(
                                config.session_id_from_headers(&browser_sends(
                                    &config.removal_cookie()
                                )),
                                None
                            );
                        }
                    }
                }
            }
        }
    }
    // "sid": all 24 secure variants, and the 8 insecure ones without
    // SameSite=None or Partitioned; "__Secure-sid" and "__Http-sid" (always
    // HttpOnly here): the 24 secure ones each; "__Host-sid" and
    // "__Host-Http-sid": the 12 secure ones with Path=/ and no Domain each.
    assert_eq!(
        built,
        3 * 2 * 2 * 2 + 2 * 2 * 2 + 2 * (3 * 2 * 2 * 2) + 2 * (3 * 2 * 2)
    );
}
