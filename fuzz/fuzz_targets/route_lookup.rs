//! Routing any request line: normalise then look up in a fixed table; never
//! panics, and a match always has the method it was asked for (or GET for HEAD).
#![no_main]

use aether_gateway::router::{Lookup, RoutePolicy, normalize_path};
use aether_gateway::{HttpMethod, Route, Router, ServiceTarget};
use libfuzzer_sys::fuzz_target;

fn router() -> Router {
    let mut r = Router::new();
    for (m, p) in [
        (HttpMethod::Get, "/api/v1/worlds/{world_id}"),
        (HttpMethod::Post, "/api/v1/worlds"),
        (HttpMethod::Get, "/api/v1/assets/{*path}"),
        (HttpMethod::Delete, "/api/v1/worlds/{world_id}/members/{member}"),
        (HttpMethod::Get, "/"),
    ] {
        r.try_add_route(
            Route { method: m, path: p.into(), target: ServiceTarget::WorldService, rate_limit: None },
            RoutePolicy::default(),
        )
        .unwrap();
    }
    r
}

fuzz_target!(|data: &[u8]| {
    thread_local!(static R: Router = router());
    let Some((&m, rest)) = data.split_first() else { return };
    let Ok(path) = std::str::from_utf8(rest) else { return };
    let method = [http::Method::GET, http::Method::HEAD, http::Method::POST, http::Method::DELETE, http::Method::OPTIONS, http::Method::PATCH][m as usize % 6].clone();
    let Ok(path) = normalize_path(path) else { return };
    R.with(|r| {
        if let Ok(Lookup::Route(found)) = r.lookup(&method, &path) {
            let want = if method == http::Method::HEAD { HttpMethod::Get } else { HttpMethod::from_http(&method).unwrap() };
            assert_eq!(found.entry.route.method, want);
            for (_, v) in found.params.iter() {
                assert!(!v.is_empty());
            }
        }
    });
});
