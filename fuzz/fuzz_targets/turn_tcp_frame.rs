//! TURN over TCP: a hostile byte stream split into messages the way the
//! relay's TCP reader splits it. Never a panic; every message inside the
//! bytes received; a STUN message exactly 20 + its length, a multiple of
//! four; ChannelData 4 + its length, taking its padding to four; the
//! stream either consumed to a partial tail or refused.
#![no_main]

use aether_gateway::relay::server::tcp_frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match tcp_frame(rest) {
            Ok(Some((msg, taken))) => {
                assert!(msg >= 4 && msg <= taken && taken <= rest.len());
                let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
                if rest[0] & 0xC0 == 0x40 {
                    assert_eq!(msg, 4 + len);
                    assert_eq!(taken, (msg + 3) & !3);
                } else {
                    assert_eq!(rest[0] >> 6, 0);
                    assert_eq!((msg, taken), (20 + len, 20 + len));
                    assert_eq!(len % 4, 0);
                }
                rest = &rest[taken..];
            }
            // A partial message: more bytes are needed, and nothing is lost.
            Ok(None) => {
                let need = if rest.len() < 4 {
                    4
                } else {
                    let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
                    if rest[0] & 0xC0 == 0x40 { (4 + len + 3) & !3 } else { 20 + len }
                };
                assert!(rest.len() < need);
                break;
            }
            // Not STUN, not ChannelData: the connection is closed.
            Err(()) => {
                assert!(rest[0] >> 6 >= 2 || (rest[0] >> 6 == 0 && u16::from_be_bytes([rest[2], rest[3]]) % 4 != 0));
                break;
            }
        }
    }
});
