//! The admin web UI at `/viewer/`: static HTML, CSS and JS compiled into
//! the binary. The files themselves are public; every data call they make
//! sends the admin key the operator types in, which the page keeps in
//! `sessionStorage` only.

use crate::http::Response;

/// One file of the UI.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

pub static INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("viewer/index.html"),
};

static ASSETS: [&Asset; 3] = [
    &INDEX,
    &Asset {
        name: "viewer.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("viewer/viewer.js"),
    },
    &Asset {
        name: "viewer.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("viewer/viewer.css"),
    },
];

/// The asset named by the last path segment, if it is one of ours. Names
/// are matched exactly, so no path ever reaches the file system.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().copied().find(|asset| asset.name == name)
}

/// Only our own script and styles may run, data may only be fetched from
/// this server, and the page may not be framed (clickjacking of an admin).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

pub fn response(asset: &Asset) -> Response {
    Response {
        status: 200,
        headers: vec![
            ("Content-Type", asset.content_type.to_owned()),
            // Revalidate on every load so an upgraded server's UI shows.
            ("Cache-Control", "no-cache".to_owned()),
            (
                "Content-Security-Policy",
                CONTENT_SECURITY_POLICY.to_owned(),
            ),
            ("X-Content-Type-Options", "nosniff".to_owned()),
            ("X-Frame-Options", "DENY".to_owned()),
            ("Referrer-Policy", "no-referrer".to_owned()),
        ],
        body: asset.body.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_found_by_exact_name_only() {
        assert_eq!(asset("index.html"), Some(&INDEX));
        assert!(
            asset("viewer.js").is_some_and(|js| js.content_type.starts_with("text/javascript"))
        );
        assert!(asset("viewer.css").is_some());
        for name in ["", "..", "VIEWER.JS", "viewer.js/", "../viewer.js"] {
            assert_eq!(asset(name), None, "{name:?}");
        }
    }

    #[test]
    fn page_loads_only_its_own_files() {
        // The CSP forbids inline script, so the page must not rely on any.
        assert!(!INDEX.body.contains("<script>"));
        assert!(INDEX.body.contains(r#"<script src="/viewer/viewer.js""#));
        assert!(INDEX.body.contains(r#"href="/viewer/viewer.css""#));
        let response = response(&INDEX);
        let csp = response
            .headers
            .iter()
            .find(|(name, _)| *name == "Content-Security-Policy")
            .map(|(_, value)| value.as_str());
        assert!(csp.is_some_and(|csp| csp.contains("script-src 'self'")));
    }

    #[test]
    fn script_never_writes_html_from_strings() {
        // User content is shown with textContent only; innerHTML (or its
        // relatives) on data would let a message run script in an admin's
        // browser.
        let js = asset("viewer.js").map(|js| js.body).unwrap_or_default();
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!js.contains(sink), "viewer.js uses {sink}");
        }
    }
}
