//! Empty: the programs are in the `fim-ebpf` binary. This target exists so that
//! `fim-userspace` can list the crate as a build dependency (cargo rebuilds on change).
#![no_std]
