//! Path normalisation: never panics, and what it returns is in normal form,
//! idempotent, and no longer than the input plus a trailing slash.
#![no_main]

use aether_gateway::router::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let Ok(out) = normalize_path(input) else { return };
    assert!(out.starts_with('/'));
    assert!(!out.contains("//"));
    assert!(out.split('/').all(|s| s != "." && s != ".."));
    assert!(out.len() <= input.len() + 1);
    assert_eq!(normalize_path(&out).expect("normal form is accepted"), out);
});
