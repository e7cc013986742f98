//! Event sources. Each sensor turns kernel activity into [`crate::event::FileEvent`]s.

pub mod ebpf;
