//! fim's eBPF programs: one object for every tier.
//!
//! `programs`: the tracepoint tier, syscall tracepoints only, for kernels that refuse fentry,
//! LSM and kprobes; `hooks`: the LSM and fentry tiers (kernel objects, announcements paired
//! with outcomes; see that module). In the tracepoint tier every followed syscall is paired: [`fim_sys_enter`] saves its arguments, and the exit
//! program of its [`fim_common::Shape`] emits an event only if the syscall succeeded and its
//! path is under a watched root. Writes are followed per open file: an open for write under a
//! watched root registers the `struct file` in `WRITERS`, so a write anywhere else costs one
//! fd lookup and one hash miss.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic add on a map value: the BPF target has no compare-and-swap, so `AtomicU64` has no
// `fetch_add`; the intrinsic lowers to the BPF atomic add every kernel accepts.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod filter;
#[cfg(target_arch = "bpf")]
mod hooks;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod path;
#[cfg(target_arch = "bpf")]
mod programs;

/// Host builds (`cargo build --workspace`) get an empty binary; the real one is `bpfel`.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program in which a panic is reachable.
    unsafe { core::hint::unreachable_unchecked() }
}

/// GPL-compatible: the probe-read helpers require it.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
