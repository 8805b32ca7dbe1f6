//! STUN Binding from hostile datagrams: never a panic; a reply only to an
//! exact, well-formed Binding request; the reply a well-formed STUN
//! response to it, small and bounded whatever the request.
#![no_main]

use aether_gateway::relay::proto::stun::{Answer, answer, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let from = if data.first().is_some_and(|b| b & 1 == 1) {
        "[2001:db8::7]:40000".parse().unwrap()
    } else {
        "203.0.113.7:40000".parse().unwrap()
    };
    let mut out = [0u8; 512];
    match answer(data, from, &mut out) {
        Answer::Reply(n) => {
            let req = parse(data).expect("replied to something that is not one STUN message");
            assert_eq!(u16::from_be_bytes([data[0], data[1]]), 0x0001, "replied to a non-request");
            let resp = parse(&out[..n]).expect("the reply parses");
            assert_eq!(resp.transaction_id(), req.transaction_id());
            // Header + XOR-MAPPED-ADDRESS (v6) + FINGERPRINT, or header +
            // ERROR-CODE + 8 unknown attributes + FINGERPRINT.
            assert!(n <= 20 + 24 + 8 + 8 + 4 + 16 + 8, "{n}-byte reply");
        }
        Answer::Drop | Answer::NotBinding => {}
    }
});
