//! Builds the eBPF object (`fim-ebpf`, target bpfel-unknown-none) and leaves it in OUT_DIR,
//! where `sensors::ebpf` embeds it. Linux targets only: elsewhere there is no eBPF sensor
//! (and no object to embed).
//!
//! The eBPF crate needs `-Z build-std=core`. The toolchain is the pinned stable one (its
//! LLVM must match bpf-linker's), so unstable flags are enabled for that one child build
//! only, through RUSTC_BOOTSTRAP.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=FIM_TOOLCHAIN");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return Ok(());
    }
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let toolchain = std::env::var("FIM_TOOLCHAIN").unwrap_or_else(|_| "1.95.0".to_owned());
    let package = aya_build::Package {
        name: "fim-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../fim-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
}
