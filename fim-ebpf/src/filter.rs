//! In-kernel filtering: is a path under a watched root?
//!
//! Roots live in an LPM trie keyed by path bytes ending in `/`. The path is looked up with a
//! `/` appended, so `/etc/` matches `/etc` itself and everything below it, but never
//! `/etcfoo`. The longest matching root decides; userspace marks roots that a shorter
//! recursive root also covers as recursive, so the longest match is always enough.
//! Userspace re-checks every event against the exact rules: this is a conservative
//! pre-filter that keeps unwatched activity out of the ring buffer.

use fim_common::{DATA_MASK, EventBuf, ROOT_KEY_LEN, SUFFIX_MAX, root_flags};

use crate::{
    maps::{KEYBUF, WATCH_ROOTS},
    path::get_byte,
};
use aya_ebpf::helpers::generated::bpf_probe_read_kernel;

/// Whether a path written at `pos` is watched: a watched object was found on the way up by
/// identity (however the path was spelled), or its spelling is under a watched root (a
/// root that did not exist at load, a path read from a syscall's string).
#[inline(always)]
pub fn is_watched_path(buf: *mut EventBuf, pos: usize, w: &crate::path::Written) -> bool {
    w.watch.id != 0 || is_watched(buf, pos, w.len)
}

/// Whether the `len`-byte path at `pos` of the data area is watched.
#[inline(always)]
pub fn is_watched(buf: *mut EventBuf, pos: usize, len: usize) -> bool {
    if len == 0 {
        return false;
    }
    let Some(key) = KEYBUF.get_ptr_mut(0) else {
        return false;
    };
    unsafe {
        let src = (*buf).data.as_ptr().add(pos & DATA_MASK);
        bpf_probe_read_kernel(
            (&raw mut (*key).data).cast(),
            ROOT_KEY_LEN as u32,
            src.cast(),
        );
        if len < ROOT_KEY_LEN {
            // Masked after an opaque copy: LLVM drops a mask the branch makes redundant, and
            // the verifier may see `len` reloaded from the stack without that bound.
            let at = core::ptr::read_volatile(&len) & (ROOT_KEY_LEN - 1);
            (*key).data[at] = b'/';
            (*key).prefix_len = ((len + 1) * 8) as u32;
        } else {
            (*key).prefix_len = (ROOT_KEY_LEN * 8) as u32;
        }
    }
    let Some(root) = WATCH_ROOTS.get(unsafe { &*key }) else {
        return false;
    };
    let root_len = root.root_len as usize;
    let flags = root.flags;
    if len + 1 == root_len {
        return flags & root_flags::SELF != 0;
    }
    if flags & root_flags::RECURSIVE != 0 {
        return true;
    }
    if flags & root_flags::CHILDREN == 0 || len < root_len {
        return false;
    }
    // A glob's directory: the kernel checks the name suffix; that the name is a direct child
    // is left to userspace (a scan for `/` here costs more verifier budget than it saves).
    let name_len = len - root_len;
    let suffix_len = root.suffix_len as usize;
    if suffix_len > SUFFIX_MAX || suffix_len > name_len {
        return false;
    }
    // Unrolled with constant indices: a loop becomes a pointer walk that the 6.1 verifier
    // cannot bound against the 44-byte map value.
    macro_rules! compare {
        ($($i:literal)*) => {$(
            if $i < suffix_len && get_byte(buf, pos + len - suffix_len + $i) != root.suffix[$i] {
                return false;
            }
        )*};
    }
    compare!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
    true
}
