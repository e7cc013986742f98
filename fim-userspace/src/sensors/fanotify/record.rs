//! Parsing what `read(2)` returns from a fanotify group in FID mode: a sequence of
//! `fanotify_event_metadata` headers, each followed by info records (file handles, with a
//! name for directory-entry events, and old/new pairs for `FAN_RENAME`).
//!
//! Pure: the `nix` crate has no FID support and `libc` only has the structs, so the layout
//! is read here byte by byte and unit-tested with synthetic buffers.

/// `fanotify_event_metadata` is 24 bytes.
pub const METADATA_LEN: usize = 24;
/// The metadata version this parser knows.
pub const METADATA_VERSION: u8 = 3;

/// Info record types (`FAN_EVENT_INFO_TYPE_*`).
pub mod info {
    /// The object itself (`FAN_REPORT_FID` / `FAN_REPORT_TARGET_FID`).
    pub const FID: u8 = 1;
    /// Parent directory and entry name.
    pub const DFID_NAME: u8 = 2;
    /// Parent directory only.
    pub const DFID: u8 = 3;
    /// Rename: the old parent and name.
    pub const OLD_DFID_NAME: u8 = 10;
    /// Rename: the new parent and name.
    pub const NEW_DFID_NAME: u8 = 12;
}

/// One file-handle info record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fid {
    /// `FAN_EVENT_INFO_TYPE_*`.
    pub kind: u8,
    /// File system id (`__kernel_fsid_t`, two 32-bit words).
    pub fsid: [i32; 2],
    /// `file_handle.handle_type`.
    pub handle_type: i32,
    /// `file_handle.f_handle`.
    pub handle: Vec<u8>,
    /// The entry name (directory-entry records), without its NUL.
    pub name: Option<Vec<u8>>,
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `FAN_*` bits.
    pub mask: u64,
    /// Acting thread (`FAN_REPORT_TID`) or process.
    pub pid: i32,
    /// Its info records, in order.
    pub fids: Vec<Fid>,
}

impl Record {
    /// The first record of `kind`.
    pub fn fid(&self, kind: u8) -> Option<&Fid> {
        self.fids.iter().find(|f| f.kind == kind)
    }
}

/// The buffer does not hold what the kernel documents.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Shorter than its own header says.
    #[error("fanotify record truncated at offset {0}")]
    Truncated(usize),
    /// A metadata version this parser does not know.
    #[error("fanotify metadata version {0}, expected {METADATA_VERSION}")]
    Version(u8),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse_fid(b: &[u8], kind: u8) -> Option<Fid> {
    // header (4) + fsid (8) + handle_bytes (4) + handle_type (4) + handle
    if b.len() < 20 {
        return None;
    }
    let fsid = [u32_at(b, 4) as i32, u32_at(b, 8) as i32];
    let n = u32_at(b, 12) as usize;
    let handle_type = u32_at(b, 16) as i32;
    let handle = b.get(20..20 + n)?.to_vec();
    let name = matches!(
        kind,
        info::DFID_NAME | info::OLD_DFID_NAME | info::NEW_DFID_NAME
    )
    .then(|| {
        let rest = &b[20 + n..];
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        rest[..end].to_vec()
    });
    Some(Fid {
        kind,
        fsid,
        handle_type,
        handle,
        name,
    })
}

/// Splits one `read` result into records. Info records of unknown types are skipped.
pub fn parse(buf: &[u8]) -> Result<Vec<Record>, RecordError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + METADATA_LEN <= buf.len() {
        let b = &buf[at..];
        let event_len = u32_at(b, 0) as usize;
        let vers = b[4];
        let metadata_len = u16_at(b, 6) as usize;
        if vers != METADATA_VERSION {
            return Err(RecordError::Version(vers));
        }
        if event_len < METADATA_LEN || event_len > b.len() || metadata_len > event_len {
            return Err(RecordError::Truncated(at));
        }
        let mask = u64::from_ne_bytes(
            b[8..16]
                .try_into()
                .map_err(|_| RecordError::Truncated(at))?,
        );
        let pid = u32_at(b, 20) as i32;
        let mut fids = Vec::new();
        let mut i = metadata_len;
        while i + 4 <= event_len {
            let kind = b[i];
            let len = u16_at(b, i + 2) as usize;
            if len < 4 || i + len > event_len {
                return Err(RecordError::Truncated(at + i));
            }
            if matches!(
                kind,
                info::FID
                    | info::DFID_NAME
                    | info::DFID
                    | info::OLD_DFID_NAME
                    | info::NEW_DFID_NAME
            ) && let Some(f) = parse_fid(&b[i..i + len], kind)
            {
                fids.push(f);
            }
            i += len;
        }
        out.push(Record { mask, pid, fids });
        at += event_len;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// (info type, handle, name) of one synthetic info record.
    type TestFid<'a> = (u8, &'a [u8], Option<&'a [u8]>);

    /// Builds one record the way the kernel lays it out.
    pub(crate) fn record(mask: u64, pid: i32, fids: &[TestFid<'_>]) -> Vec<u8> {
        let mut infos = Vec::new();
        for (kind, handle, name) in fids {
            let mut r = vec![*kind, 0, 0, 0];
            r.extend_from_slice(&7i32.to_ne_bytes());
            r.extend_from_slice(&9i32.to_ne_bytes());
            r.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
            r.extend_from_slice(&1i32.to_ne_bytes());
            r.extend_from_slice(handle);
            if let Some(n) = name {
                r.extend_from_slice(n);
                r.push(0);
            }
            while r.len() % 4 != 0 {
                r.push(0);
            }
            let len = r.len() as u16;
            r[2..4].copy_from_slice(&len.to_ne_bytes());
            infos.extend_from_slice(&r);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&((METADATA_LEN + infos.len()) as u32).to_ne_bytes());
        out.push(METADATA_VERSION);
        out.push(0);
        out.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&(-1i32).to_ne_bytes());
        out.extend_from_slice(&pid.to_ne_bytes());
        out.extend_from_slice(&infos);
        out
    }

    #[test]
    fn rename_carries_both_names_and_the_target() {
        let mut buf = record(
            libc::FAN_RENAME,
            42,
            &[
                (info::OLD_DFID_NAME, b"dirA1234", Some(b"old")),
                (info::NEW_DFID_NAME, b"dirB1234", Some(b"new\xff")),
                (info::FID, b"file5678", None),
            ],
        );
        buf.extend(record(
            libc::FAN_CLOSE_WRITE,
            43,
            &[(info::FID, b"x", None)],
        ));
        let recs = parse(&buf).expect("valid");
        assert_eq!(recs.len(), 2);
        let r = &recs[0];
        assert_eq!((r.mask, r.pid), (libc::FAN_RENAME, 42));
        let old = r.fid(info::OLD_DFID_NAME).expect("old");
        assert_eq!(
            (old.handle.as_slice(), old.name.as_deref()),
            (&b"dirA1234"[..], Some(&b"old"[..]))
        );
        assert_eq!(old.fsid, [7, 9]);
        let new = r.fid(info::NEW_DFID_NAME).expect("new");
        assert_eq!(new.name.as_deref(), Some(&b"new\xff"[..]));
        assert_eq!(r.fid(info::FID).expect("fid").name, None);
        assert_eq!(recs[1].pid, 43);
    }

    #[test]
    fn truncated_and_foreign_records_are_errors() {
        let buf = record(libc::FAN_CREATE, 1, &[(info::DFID_NAME, b"d", Some(b"n"))]);
        assert_eq!(parse(&buf[..buf.len() - 4]), Err(RecordError::Truncated(0)));
        let mut v2 = buf.clone();
        v2[4] = 2;
        assert_eq!(parse(&v2), Err(RecordError::Version(2)));
        // A partial trailing header is left for the next read, not an error.
        let mut two = buf.clone();
        two.extend_from_slice(&buf[..10]);
        assert_eq!(parse(&two).expect("first").len(), 1);
    }
}
