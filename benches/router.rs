//! Route matching cost: path normalisation + radix-tree lookup, on a route
//! table shaped like Aether's (60 routes across 6 services).

use aether_gateway::router::{Lookup, RoutePolicy, normalize_path};
use aether_gateway::{HttpMethod, Route, Router, ServiceTarget};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn table() -> Router {
    let mut r = Router::new();
    let services = [
        "worlds", "assets", "friends", "parties", "presence", "voice",
    ];
    for s in services {
        let target = ServiceTarget::from_name(&format!("{s}-service"));
        let templates = [
            format!("/api/v1/{s}"),
            format!("/api/v1/{s}/{{id}}"),
            format!("/api/v1/{s}/{{id}}/members"),
            format!("/api/v1/{s}/{{id}}/members/{{member_id}}"),
            format!("/api/v1/{s}/{{id}}/state"),
            format!("/api/v1/{s}/{{id}}/events"),
            format!("/api/v2/{s}/{{id}}"),
            format!("/api/v2/{s}/{{id}}/files/{{*path}}"),
        ];
        for (i, path) in templates.into_iter().enumerate() {
            let method = if i % 2 == 0 {
                HttpMethod::Get
            } else {
                HttpMethod::Post
            };
            r.try_add_route(
                Route {
                    method,
                    path,
                    target: target.clone(),
                    rate_limit: None,
                },
                RoutePolicy::default(),
            )
            .unwrap();
        }
    }
    r
}

fn bench(c: &mut Criterion) {
    let router = table();
    let get = http::Method::GET;
    let post = http::Method::POST;
    let mut g = c.benchmark_group("route_match");
    g.bench_function("param_path", |b| {
        b.iter(|| {
            let p = normalize_path(black_box("/api/v1/worlds/8c1f0e2a/members")).unwrap();
            matches!(router.lookup(&post, &p), Ok(Lookup::Route(_)))
        })
    });
    g.bench_function("static_path", |b| {
        b.iter(|| {
            let p = normalize_path(black_box("/api/v1/presence")).unwrap();
            matches!(router.lookup(&get, &p), Ok(Lookup::Route(_)))
        })
    });
    g.bench_function("catch_all", |b| {
        b.iter(|| {
            let p = normalize_path(black_box("/api/v2/assets/42/files/avatars/robot/mesh.glb"))
                .unwrap();
            matches!(router.lookup(&get, &p), Ok(Lookup::Route(_)))
        })
    });
    g.bench_function("not_found", |b| {
        b.iter(|| {
            let p = normalize_path(black_box("/api/v3/nothing/here")).unwrap();
            router.lookup(&get, &p).is_err()
        })
    });
    g.bench_function("needs_normalising", |b| {
        b.iter(|| {
            let p = normalize_path(black_box("/api//v1/./worlds/x/../8c1f0e2a/%6Dembers")).unwrap();
            matches!(router.lookup(&post, &p), Ok(Lookup::Route(_)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
