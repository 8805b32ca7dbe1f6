//! W3C trace context from any client: `traceparent` parsing and the
//! `tracestate` that is passed on. Invariants: no panic; what is passed on
//! is at most 512 bytes, a valid header value, normalises to itself and
//! holds only members of the input; a parsed `traceparent` re-encodes to a
//! value that parses to the same ids.
#![no_main]

use aether_gateway::metrics::traceparent::{
    MAX_TRACESTATE_BYTES, TraceParent, normalize_tracestate,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first bytes are a traceparent, the rest up to three tracestate fields.
    let (tp, rest) = data.split_at(data.len().min(60));
    if let Ok(p) = TraceParent::parse(tp) {
        let again = TraceParent::parse(p.header_value().as_bytes()).expect("re-encoded");
        assert_eq!((again.trace_id, again.parent_id), (p.trace_id, p.parent_id));
    }
    let fields: Vec<&[u8]> = rest.splitn(3, |&b| b == b'\n').collect();
    if let Some(v) = normalize_tracestate(fields.iter().copied()) {
        assert!(v.len() <= MAX_TRACESTATE_BYTES);
        let again = normalize_tracestate(std::iter::once(v.as_bytes()));
        assert_eq!(again.as_ref(), Some(&v));
        for m in v.as_bytes().split(|&b| b == b',') {
            assert!(
                fields
                    .iter()
                    .any(|f| f.split(|&b| b == b',').any(|x| x.trim_ascii() == m)),
                "{m:?} was not in the input"
            );
        }
    }
});
