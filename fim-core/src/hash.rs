//! The one place a digest is computed. Every caller (real-time engine, `fim scan`, the
//! benchmark) hashes through [`Sha256`], so the implementation can change in one spot.
//!
//! Backed by the system's OpenSSL libcrypto, whose SHA-256 picks the fastest assembly for
//! the CPU at run time (SHA-NI, AVX2, AVX, SSSE3). The pure-Rust `sha2` crate measured about
//! half its speed without SHA-NI, and `ring` about 10% slower (it lacks the AVX2 path).
//! `cargo xtask bench hash` compares this seam with `openssl speed`, with and without SHA-NI.
//! On Windows, where no system libcrypto can be assumed, RustCrypto's `sha2` backs it.

use std::io::Read;

#[cfg(unix)]
type Backend = openssl::sha::Sha256;
#[cfg(not(unix))]
type Backend = sha2::Sha256;

/// A SHA-256 computation in progress.
pub struct Sha256(Backend);

impl Default for Sha256 {
    fn default() -> Self {
        #[cfg(not(unix))]
        use sha2::Digest as _;
        Self(Backend::new())
    }
}

impl Sha256 {
    /// Starts a digest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        #[cfg(not(unix))]
        use sha2::Digest as _;
        self.0.update(bytes);
    }

    /// Finishes and returns the 32-byte digest.
    pub fn finish(self) -> [u8; 32] {
        #[cfg(unix)]
        return self.0.finish();
        #[cfg(not(unix))]
        {
            use sha2::Digest as _;
            self.0.finalize().into()
        }
    }
}

/// SHA-256 of a byte slice.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finish()
}

/// Size of the read buffer callers should pass to [`sha256_reader`]: large enough that
/// syscall overhead is noise, small enough to stay in L2.
pub const READ_BUFFER: usize = 256 * 1024;

/// SHA-256 of everything `reader` yields, reading through `buf`. Returns the digest and
/// the number of bytes read. `expected` is the size the caller saw: a short read at or
/// past it is taken as the end, which saves the final empty read on regular files.
pub fn sha256_reader(
    reader: &mut impl Read,
    expected: u64,
    buf: &mut [u8],
) -> std::io::Result<([u8; 32], u64)> {
    let mut h = Sha256::new();
    let mut total = 0u64;
    loop {
        match reader.read(buf) {
            Ok(0) => return Ok((h.finish(), total)),
            Ok(n) => {
                h.update(&buf[..n]);
                total += n as u64;
                if n < buf.len() && total >= expected {
                    return Ok((h.finish(), total));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// SHA-256 and MD5 of everything `reader` yields, in one read (as [`sha256_reader`]); MD5
/// is what dpkg records of the files it installs. Linux only: packages are a Linux matter.
#[cfg(unix)]
pub fn sha256_md5_reader(
    reader: &mut impl Read,
    expected: u64,
    buf: &mut [u8],
) -> std::io::Result<([u8; 32], [u8; 16], u64)> {
    use md5::Digest as _;
    let mut sha = Sha256::new();
    let mut md5 = md5::Md5::new();
    let mut total = 0u64;
    let finish = |sha: Sha256, md5: md5::Md5, total| -> std::io::Result<_> {
        Ok((sha.finish(), md5.finalize().into(), total))
    };
    loop {
        match reader.read(buf) {
            Ok(0) => return finish(sha, md5, total),
            Ok(n) => {
                sha.update(&buf[..n]);
                md5.update(&buf[..n]);
                total += n as u64;
                if n < buf.len() && total >= expected {
                    return finish(sha, md5, total);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::hex;

    #[test]
    fn known_answers() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn reader_matches_one_shot_across_buffer_boundaries() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut buf = vec![0u8; 4096];
        let (d, n) = sha256_reader(&mut &data[..], 0, &mut buf).expect("reading a slice");
        assert_eq!(n, 100_000);
        assert_eq!(d, sha256(&data));
    }

    #[cfg(unix)]
    #[test]
    fn one_read_gives_both_digests() {
        let mut reader: &[u8] = b"abc";
        let mut buf = [0u8; 2];
        let (sha, md5, n) = sha256_md5_reader(&mut reader, 3, &mut buf).expect("read");
        assert_eq!(sha, sha256(b"abc"));
        assert_eq!(hex(&md5), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(n, 3);
    }
}
