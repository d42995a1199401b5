//! The API's self-description: `GET /openapi.json` (an OpenAPI 3.0
//! document compiled into the binary) and `GET /docs/` (one HTML page,
//! with its CSS and JS inlined, that renders that document). Neither holds
//! a secret, so both are public. The unit tests here hold the document to
//! the router: every route it serves is described, and nothing else.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::http::Response;

/// The OpenAPI document, served byte for byte.
pub const OPENAPI_JSON: &str = include_str!("docs/openapi.json");

const PAGE_TEMPLATE: &str = include_str!("docs/index.html");
const PAGE_CSS: &str = include_str!("docs/docs.css");
const PAGE_JS: &str = include_str!("docs/docs.js");

/// Both change only with the binary; a short max-age keeps an upgraded
/// server's docs from looking stale for long.
const CACHE_CONTROL: &str = "public, max-age=300";

pub fn openapi() -> Response {
    Response::json(200, OPENAPI_JSON.as_bytes().to_vec())
        .with_header("Cache-Control", CACHE_CONTROL)
        .with_header("X-Content-Type-Options", "nosniff")
}

pub fn page() -> Response {
    let (html, policy) = assembled_page();
    Response {
        status: 200,
        headers: vec![("Content-Type", "text/html; charset=utf-8".to_owned())],
        body: html.as_bytes().to_vec(),
    }
    .with_header("Cache-Control", CACHE_CONTROL)
    .with_header("X-Content-Type-Options", "nosniff")
    .with_header("Content-Security-Policy", policy.as_str())
    .with_header("Referrer-Policy", "no-referrer")
}

/// The page with its style and script inlined, and a Content-Security-Policy
/// that allows exactly those two inline blocks (by hash) and requests to
/// this origin, so nothing else can run even if text in the document were
/// ever rendered as markup. Built once per process.
fn assembled_page() -> &'static (String, String) {
    static PAGE: OnceLock<(String, String)> = OnceLock::new();
    PAGE.get_or_init(|| {
        let html = PAGE_TEMPLATE
            .replacen("/*STYLE*/", PAGE_CSS, 1)
            .replacen("/*SCRIPT*/", PAGE_JS, 1);
        let policy = format!(
            "default-src 'none'; connect-src 'self'; style-src 'sha256-{}'; script-src 'sha256-{}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            base64(&Sha256::digest(PAGE_CSS.as_bytes())),
            base64(&Sha256::digest(PAGE_JS.as_bytes())),
        );
        (html, policy)
    })
}

/// Standard base64 with padding, as CSP hash sources are written.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::api::router::{self, Route, RouteError};
    use crate::auth::Scope;
    use crate::http::Method;

    fn spec() -> Value {
        serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
    }

    fn method_name(method: Method) -> &'static str {
        match method {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
            other => panic!("the router does not list {other:?}"),
        }
    }

    fn parse_method(name: &str) -> Option<Method> {
        Some(match name {
            "get" => Method::Get,
            "post" => Method::Post,
            "put" => Method::Put,
            "delete" => Method::Delete,
            "head" => Method::Head,
            "options" => Method::Options,
            "patch" | "trace" => Method::Other,
            _ => return None,
        })
    }

    /// (method, template) pairs the document describes.
    fn documented(spec: &Value) -> BTreeSet<(String, String)> {
        let mut set = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().expect("paths object") {
            for name in item.as_object().expect("path item object").keys() {
                if parse_method(name).is_some() {
                    set.insert((name.clone(), path.clone()));
                }
            }
        }
        set
    }

    /// `template` with every `{name}` replaced by a recognisable sample.
    fn sample_path(template: &str) -> (String, Vec<String>) {
        let mut samples = Vec::new();
        let path = template
            .split('/')
            .map(|segment| match segment.strip_prefix('{') {
                Some(name) => {
                    // Viewer files are a closed set: only real names route.
                    let sample = match name.trim_end_matches('}') {
                        "file" => "viewer.js".to_owned(),
                        name => format!("sample-{name}"),
                    };
                    samples.push(sample.clone());
                    sample
                }
                None => segment.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/");
        (path, samples)
    }

    fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str() {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').expect("local $ref");
                spec.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}"))
            }
            None => value,
        }
    }

    #[test]
    fn document_and_router_serve_the_same_routes() {
        let spec = spec();
        let served: BTreeSet<(String, String)> = router::ENDPOINTS
            .iter()
            .map(|endpoint| {
                let method = method_name(endpoint.method).to_owned();
                (method, endpoint.path.to_owned())
            })
            .collect();
        let documented = documented(&spec);
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "openapi.json lists routes the router does not serve: {unserved:?}"
        );
    }

    #[test]
    fn every_documented_operation_resolves_through_the_router() {
        let spec = spec();
        for (path, item) in spec["paths"].as_object().unwrap() {
            let (concrete, samples) = sample_path(path);
            for (name, operation) in item.as_object().unwrap() {
                let Some(method) = parse_method(name) else {
                    continue;
                };
                let routed = router::route(method, &concrete)
                    .unwrap_or_else(|err| panic!("{name} {concrete}: {err:?}"));
                let route = routed.route;
                assert!(
                    !matches!(route, Route::Options(_)),
                    "{name} {concrete} reached OPTIONS"
                );
                // The captures land in the route, in template order.
                let shown = format!("{route:?}");
                let mut from = 0;
                for sample in &samples {
                    let at = shown[from..]
                        .find(&format!("{sample:?}"))
                        .unwrap_or_else(|| panic!("{name} {concrete}: {shown} lacks {sample}"));
                    from += at + sample.len();
                }
                // The key kinds the document names are the ones auth enforces.
                let kinds: Vec<&str> = operation["x-key-kinds"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{name} {path} lacks x-key-kinds"))
                    .iter()
                    .map(|kind| kind.as_str().unwrap())
                    .collect();
                let expected: &[&str] = match routed.endpoint.scope {
                    None => &[],
                    Some(Scope::Frontend) => &["backend", "frontend"],
                    Some(Scope::Backend) => &["backend"],
                    Some(Scope::Admin) => &["admin"],
                };
                assert_eq!(kinds, expected, "{name} {path}");
                let security = operation["security"].as_array().expect("security");
                assert_eq!(security.is_empty(), expected.is_empty(), "{name} {path}");
                for requirement in security {
                    for scheme in requirement.as_object().unwrap().keys() {
                        assert!(
                            spec["components"]["securitySchemes"][scheme].is_object(),
                            "{name} {path}: unknown security scheme {scheme}"
                        );
                    }
                }
                if expected.contains(&"frontend") {
                    assert!(
                        security.iter().any(|r| r.get("userSignature").is_some()),
                        "{name} {path}: frontend keys need X-User-Signature"
                    );
                }
            }
            // Methods the document leaves out must be refused by the router.
            for other in ["get", "post", "put", "delete"] {
                if item.get(other).is_none() {
                    let method = parse_method(other).unwrap();
                    assert!(
                        matches!(
                            router::route(method, &concrete),
                            Err(RouteError::MethodNotAllowed(_))
                        ),
                        "{other} {concrete} is served but undocumented"
                    );
                }
            }
        }
    }

    #[test]
    fn path_parameters_match_their_templates() {
        let spec = spec();
        for (path, item) in spec["paths"].as_object().unwrap() {
            let placeholders: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            for (name, operation) in item.as_object().unwrap() {
                let declared: BTreeSet<&str> = operation["parameters"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|p| resolve(&spec, p))
                    .filter(|p| p["in"] == "path")
                    .map(|p| {
                        assert_eq!(p["required"], true, "{name} {path}");
                        p["name"].as_str().unwrap()
                    })
                    .collect();
                assert_eq!(declared, placeholders, "{name} {path}");
                // Every reference in the operation resolves.
                for key in ["requestBody", "responses", "parameters"] {
                    check_refs(&spec, &operation[key]);
                }
            }
        }
    }

    fn check_refs(spec: &Value, value: &Value) {
        match value {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    check_refs(spec, resolve(spec, value));
                } else {
                    map.values().for_each(|v| check_refs(spec, v));
                }
            }
            Value::Array(items) => items.iter().for_each(|v| check_refs(spec, v)),
            _ => {}
        }
    }

    #[test]
    fn document_is_openapi_3_for_this_version() {
        let spec = spec();
        assert!(spec["openapi"].as_str().unwrap().starts_with("3.0."));
        assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));
        let error = &spec["components"]["schemas"]["Error"];
        assert_eq!(error["required"], serde_json::json!(["error", "message"]));
        for scheme in ["bearer", "apiKey", "userId", "userSignature"] {
            assert!(
                spec["components"]["securitySchemes"][scheme].is_object(),
                "{scheme}"
            );
        }
        let list = &spec["paths"]["/frontend/v1/threads/{id}/messages"]["get"]["parameters"];
        let names: BTreeSet<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| resolve(&spec, p)["name"].as_str().unwrap())
            .collect();
        for query in [
            "limit",
            "before",
            "after",
            "anchor",
            "sort_by",
            "include_deleted",
        ] {
            assert!(names.contains(query), "message listing lacks `{query}`");
        }
    }

    #[test]
    fn page_inlines_its_assets_under_a_hash_policy() {
        let (html, policy) = assembled_page();
        assert!(!html.contains("/*STYLE*/") && !html.contains("/*SCRIPT*/"));
        assert!(html.contains(PAGE_CSS) && html.contains(PAGE_JS));
        assert!(policy.contains("script-src 'sha256-") && !policy.contains("unsafe-inline"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no CDN"
        );
        let response = page();
        assert_eq!(
            response.headers[0],
            ("Content-Type", "text/html; charset=utf-8".to_owned())
        );
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
    }
}
