//! The maps shared with userspace (names from `fim_common::maps`) and per-CPU scratch space.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
};
use fim_common::{
    DROP_REASONS, DropReason, EventBuf, MAX_SYSCALL_NR, MAX_WATCH_ROOTS, MAX_WATCHED_OBJECTS,
    ObjectKey, PATH_MAX, Pending, ROOT_KEY_LEN, SyscallSpec, WatchRoot, WatchedObject, WriterState,
};

/// Event records for userspace.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(fim_common::RING_BYTES, 0);

/// Records that could not be delivered, per CPU, by [`DropReason`].
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASONS, 0);

/// Watched roots as path prefixes.
#[map]
pub static WATCH_ROOTS: LpmTrie<[u8; ROOT_KEY_LEN], WatchRoot> =
    LpmTrie::with_max_entries(MAX_WATCH_ROOTS, 0);

/// Watched objects by identity (device and inode): the watched roots, and watched files
/// with other hard links. Filled by userspace at load; the kernel-object tiers add a file
/// when it is hard-linked.
#[map]
pub static WATCHED_OBJECTS: HashMap<ObjectKey, WatchedObject> =
    HashMap::with_max_entries(MAX_WATCHED_OBJECTS, 0);

/// What each followed syscall means, by syscall number.
#[map]
pub static SYSCALLS: Array<SyscallSpec> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

/// Arguments saved at syscall entry, by pid_tgid.
#[map]
pub static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(16384, 0);

/// How many threads are inside a followed path-named attribute call (chmod, chown,
/// truncate, utimes, xattrs) right now: counted up when its arguments are saved, down when
/// they are taken. The ctime hooks run at every ctime update on the host; while this is
/// zero no thread can be in such a call, and they stop at once instead of looking the
/// thread up. A count left too high (an entry overwritten before its exit) only keeps
/// them looking, as they did before the count existed.
#[map]
pub static ATTRIBUTE_CALLS: Array<u64> = Array::with_max_entries(1, 0);

/// Adds `delta` (wrapping) to the count of attribute calls in flight.
#[inline(always)]
pub fn count_attribute_calls(delta: u64) {
    if let Some(count) = ATTRIBUTE_CALLS.get_ptr_mut(0) {
        // Shared by every CPU: an atomic add (the result unused, so no fetch is needed,
        // which every kernel's BPF accepts).
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                count, delta,
            )
        };
    }
}

/// Whether any thread is inside a followed attribute call.
#[inline(always)]
pub fn attribute_calls_in_flight() -> bool {
    ATTRIBUTE_CALLS
        .get_ptr(0)
        .is_none_or(|count| unsafe { core::ptr::read_volatile(count) } != 0)
}

/// Files opened for writing under a watched root, by `struct file` address. LRU: a file
/// released without a `close` syscall (process exit, dup2 over it) ages out.
#[map]
pub static WRITERS: LruHashMap<u64, WriterState> = LruHashMap::with_max_entries(65536, 0);

/// Kernel-object tiers: the operation each thread announced and awaits the outcome of, by
/// pid_tgid -> [`fim_common::Outcome`] index. LRU: an announcement whose outcome function
/// never ran (the operation failed before reaching it) ages out.
#[map]
pub static INTENT: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

/// Kernel-object tiers: the dentry an `O_TRUNC` open just opened, by pid_tgid, so the
/// truncate that follows inside the same open is not reported as a separate truncate (the
/// open event says `O_TRUNC`, as in the tracepoint tier).
#[map]
pub static OPEN_TRUNCATES: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// Scratch space an event is built in (too big for the 512-byte BPF stack).
#[map]
pub static SCRATCH: PerCpuArray<EventBuf> = PerCpuArray::with_max_entries(1, 0);

/// The executable path last written on this CPU, and whose it was (see
/// `emit::fill_process`).
#[repr(C)]
pub struct ExeCache {
    /// The process's `mm`, its `exe_file`, and its group leader's start time: the same
    /// three mean the same executable of the same process (an exec replaces the `mm`; a
    /// freed `mm` or file reused by a later process comes with another start time).
    pub mm: u64,
    pub exe_file: u64,
    pub start_time: u64,
    /// Length of the path in `bytes`; whether it was cut short.
    pub len: u64,
    pub truncated: u64,
    pub bytes: [u8; PATH_MAX],
}

/// One [`ExeCache`] per CPU: a process doing many operations in a row walks its
/// executable's path once, not once per event.
#[map]
pub static EXE_CACHE: PerCpuArray<ExeCache> = PerCpuArray::with_max_entries(1, 0);

/// Scratch for the dentry walk: the path is assembled backwards in the lower half of
/// `bytes` (the upper half is slack so masked writes stay in bounds).
#[repr(C)]
pub struct PathScratch {
    pub bytes: [u8; 2 * PATH_MAX],
    /// The walk's cursor, shared with the `bpf_loop` callback.
    pub walk: crate::path::WalkState,
}

/// Scratch for the dentry walk.
#[map]
pub static PATHBUF: PerCpuArray<PathScratch> = PerCpuArray::with_max_entries(1, 0);

/// Scratch for the watch-root lookup key.
#[map]
pub static KEYBUF: PerCpuArray<Key<[u8; ROOT_KEY_LEN]>> = PerCpuArray::with_max_entries(1, 0);

/// Starts following writes to `file` (opened for writing under a watched root).
#[inline(always)]
pub fn follow_writes(file: u64) {
    let fresh = WriterState {
        bytes: 0,
        writes: 0,
        flags: 0,
        owner: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
    };
    if WRITERS.insert(&file, &fresh, 0).is_err() {
        count_drop(DropReason::WritersFull);
    }
}

/// Takes back one drop counted by this program on this CPU (what was lost is sent again).
#[inline(always)]
pub fn uncount_drop(reason: DropReason) {
    if let Some(counter) = DROPS.get_ptr_mut(reason as u32) {
        // Per-CPU value, and the program that counted it is still running on this CPU.
        unsafe { *counter = (*counter).saturating_sub(1) };
    }
}

/// Counts one drop.
#[inline(always)]
pub fn count_drop(reason: DropReason) {
    if let Some(counter) = DROPS.get_ptr_mut(reason as u32) {
        // Per-CPU value: no other CPU touches it, and we cannot be preempted mid-program.
        unsafe { *counter += 1 };
    }
}
