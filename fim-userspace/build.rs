//! Builds the eBPF object (`fim-ebpf`, target bpfel-unknown-none) and leaves it in OUT_DIR,
//! where `sensors::ebpf` embeds it. Linux targets only: elsewhere there is no eBPF sensor
//! (and no object to embed).
//!
//! The object is built with full debug information, from which bpf-linker makes the BTF
//! that CO-RE relocations and the kernel's verifier need (`.BTF`, `.BTF.ext`). The DWARF it
//! came from (`.debug_*`, 4 of the object's 5.7 MB) is then removed: nothing reads it, and
//! embedded in the daemon it was mapped and paged in with the rest.
//!
//! The eBPF crate needs `-Z build-std=core`. The toolchain is the pinned stable one (its
//! LLVM must match bpf-linker's), so unstable flags are enabled for that one child build
//! only, through RUSTC_BOOTSTRAP.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=FIM_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=FIM_EBPF_LINE_INFO");
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
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))?;
    let out_dir = std::env::var("OUT_DIR")?;
    let keep_lines = std::env::var("FIM_EBPF_LINE_INFO").is_ok_and(|v| v == "1");
    strip(&std::path::Path::new(&out_dir).join("fim-ebpf"), keep_lines)
}

/// Rewrites the ELF object at `path` without its DWARF sections (and their relocations),
/// and, unless `keep_lines`, with no line records announced in `.BTF.ext`.
fn strip(path: &std::path::Path, keep_lines: bool) -> anyhow::Result<()> {
    use object::build::elf::SectionData;
    let data = std::fs::read(path)?;
    let mut elf = object::build::elf::Builder::read(&*data)?;
    for section in elf.sections.iter_mut() {
        let name: &[u8] = &section.name;
        if name.starts_with(b".debug_") || name.starts_with(b".rel.debug_") {
            section.delete = true;
        }
        if name == b".BTF.ext"
            && !keep_lines
            && let SectionData::Data(bytes) = &section.data
        {
            section.data = SectionData::Data(without_line_info(bytes)?.into());
        }
    }
    elf.delete_orphans();
    // LLVM keeps section names in the symbol string table; the writer wants a table of
    // their own.
    if !elf
        .sections
        .iter()
        .any(|s| matches!(s.data, object::build::elf::SectionData::SectionString))
    {
        let names = elf.sections.add();
        names.name = b".shstrtab"[..].into();
        names.sh_type = object::elf::SHT_STRTAB;
        names.data = SectionData::SectionString;
    }
    let mut out = Vec::new();
    elf.write(&mut out)?;
    std::fs::write(path, out)?;
    Ok(())
}

/// `.BTF.ext` with its header's `line_info_len` set to 0 (`struct btf_ext_header`: magic,
/// version, flags, hdr_len, func_info_off, func_info_len, line_info_off, line_info_len, ...,
/// little-endian). The records stay in the section, unannounced; loaders skip them.
fn without_line_info(ext: &[u8]) -> anyhow::Result<Vec<u8>> {
    const LINE_INFO_LEN_AT: usize = 20;
    anyhow::ensure!(
        ext.len() >= LINE_INFO_LEN_AT + 4 && ext[..2] == [0x9f, 0xeb],
        ".BTF.ext: not a little-endian BTF.ext header"
    );
    let mut out = ext.to_vec();
    out[LINE_INFO_LEN_AT..LINE_INFO_LEN_AT + 4].copy_from_slice(&0u32.to_le_bytes());
    Ok(out)
}
