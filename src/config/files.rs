//! Reading the files a config names (and the config itself): regular
//! files only, with a size cap.
//!
//! A FIFO or a device at a configured path would block `open` or never
//! end a read, wedging every later reload and the shutdown behind it; a
//! log file named by mistake would be read until memory runs out. Both
//! are refused with an error that says why.

use std::io::{self, Read};
use std::path::Path;

/// The largest config file: far more than any real gateway's.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// The largest PEM file (a certificate chain, a key, a CA bundle, a JWKS
/// document).
pub const MAX_PEM_BYTES: u64 = 1 << 20;
/// The largest MaxMind database (GeoLite2-City is under 100 MiB).
pub const MAX_MMDB_BYTES: u64 = 1 << 30;
/// The largest secret file (a token, an HMAC key, a TURN secret).
pub const MAX_SECRET_BYTES: u64 = 64 << 10;

/// The bytes of `path`, which must be a regular file (symlinks followed)
/// of at most `cap` bytes.
///
/// # Errors
/// The I/O error; `InvalidInput` for something that is not a regular file
/// or is larger than `cap`.
pub fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    // Opened first, then checked by the open file's own metadata (fstat):
    // a check of the path before the open could be raced by a symlink
    // swapped to a FIFO in between. Non-blocking, so opening a FIFO (or a
    // device) returns at once instead of waiting for a writer; a regular
    // file reads the same either way.
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a directory, FIFO, socket or device)",
        ));
    }
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("larger than the {cap} bytes such a file may have"),
        )
    };
    if meta.len() > cap {
        return Err(too_big());
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // Capped again while reading: the file may grow after the stat.
    file.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(too_big());
    }
    Ok(out)
}

/// A config file's text: [`read_capped`] at [`MAX_CONFIG_BYTES`], then
/// UTF-8, whose error says where the first bad byte is.
///
/// # Errors
/// `Err((line, column, message))`; line 0 when the file cannot be read.
pub fn read_config_text(path: &Path) -> Result<String, (usize, usize, String)> {
    let bytes =
        read_capped(path, MAX_CONFIG_BYTES).map_err(|e| (0, 0, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let column = good.len() - good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) + 1;
        (
            line,
            column,
            "not UTF-8 text: TOML files are UTF-8".to_owned(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read_capped(&f, 5).unwrap(), b"12345");
        let e = read_capped(&f, 4).unwrap_err();
        assert!(e.to_string().contains("larger than the 4 bytes"), "{e}");
        let e = read_capped(dir.path(), 100).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        #[cfg(unix)]
        {
            let fifo = dir.path().join("fifo");
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap();
            assert!(made.success());
            let e = read_capped(&fifo, 100).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
            let e = read_capped(Path::new("/dev/zero"), 100).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
            // A symlink to a FIFO: opened without blocking, then refused.
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&fifo, &link).unwrap();
            let e = read_capped(&link, 100).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
            // And to a regular file: followed (Kubernetes mounts are symlinks).
            std::os::unix::fs::symlink(&f, dir.path().join("ok")).unwrap();
            assert_eq!(read_capped(&dir.path().join("ok"), 5).unwrap(), b"12345");
        }
    }

    #[test]
    fn bad_utf8_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("g.toml");
        std::fs::write(&f, b"[server]\nlisten = \"a\xffb\"\n").unwrap();
        let (line, column, message) = read_config_text(&f).unwrap_err();
        assert_eq!((line, column), (2, 12));
        assert!(message.contains("UTF-8"), "{message}");
    }
}
