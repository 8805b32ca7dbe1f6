//! Config parsing: any bytes give a config or an error that names a line
//! inside the file; never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = aether_gateway::config::parse(text, Path::new("fuzz.toml")) {
        let lines = text.lines().count().max(1);
        assert!(e.line <= lines + 1, "error line {} past the end ({lines} lines): {e}", e.line);
        assert!(!e.message.is_empty());
    }
});
