//! The eBPF object `build.rs` compiles from `fim-ebpf`, embedded in the daemon.
//!
//! Its maps, programs and globals are named in the ABI crate (`fim_common::{maps,
//! programs, globals}`), which is also where every program's attach point is named; the
//! object's sections carry only the program type. The tests below read the embedded object
//! and hold the two sides to each other.

/// The eBPF object built by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fim-ebpf"));

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use fim_common::{globals, maps, programs};
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

    use super::OBJECT;

    /// Every named symbol of the object with the section it is in, and whether it is a
    /// function.
    fn symbols() -> BTreeMap<String, (String, bool)> {
        let file = object::File::parse(OBJECT).expect("the embedded object is an ELF file");
        let mut out = BTreeMap::new();
        for sym in file.symbols() {
            let (Ok(name), Some(index)) = (sym.name(), sym.section_index()) else {
                continue;
            };
            let Ok(section) = file.section_by_index(index) else {
                continue;
            };
            let section = section.name().unwrap_or_default().to_owned();
            out.insert(name.to_owned(), (section, sym.kind() == SymbolKind::Text));
        }
        out
    }

    /// The program type a section name gives (`lsm/...` and `lsm` are both LSM).
    fn program_type(section: &str) -> &str {
        section.split('/').next().unwrap_or_default()
    }

    /// Every program the ABI crate names, with the type of section it must be in.
    fn named_programs() -> BTreeMap<&'static str, &'static str> {
        let mut out = BTreeMap::new();
        for name in programs::SYSCALL_PROGRAMS {
            out.insert(name, "tracepoint");
        }
        for (name, _, _) in programs::PROCESS_TRACEPOINTS {
            out.insert(name, "tracepoint");
        }
        for (name, _) in programs::CTIME_HOOKS {
            out.insert(name, "tp_btf");
        }
        for hook in programs::PRE_HOOKS {
            out.insert(hook.lsm, "lsm");
            out.insert(hook.fentry, "fentry");
        }
        for (name, _, _) in programs::OUTCOMES {
            out.insert(name, "fexit");
        }
        for (name, _, _) in programs::FUNCTION_HOOKS {
            out.insert(name, "fentry");
        }
        out
    }

    #[test]
    fn every_map_and_global_the_abi_names_is_in_the_object() {
        let symbols = symbols();
        for name in maps::ALL {
            let (section, _) = symbols
                .get(name)
                .unwrap_or_else(|| panic!("map {name} is not in the object"));
            assert_eq!(section, "maps", "map {name}");
        }
        for name in globals::ALL {
            let (section, _) = symbols
                .get(name)
                .unwrap_or_else(|| panic!("global {name} is not in the object"));
            assert!(
                [".rodata", ".data", ".bss"]
                    .iter()
                    .any(|s| section.starts_with(s)),
                "global {name} is in {section}"
            );
        }
    }

    #[test]
    fn every_program_the_abi_names_is_in_the_object_and_nothing_else() {
        let symbols = symbols();
        let named = named_programs();
        for (name, kind) in &named {
            let (section, function) = symbols
                .get(*name)
                .unwrap_or_else(|| panic!("program {name} is not in the object"));
            assert!(function, "{name} is not a function");
            assert_eq!(
                program_type(section),
                *kind,
                "program {name} is in {section}"
            );
        }
        // The other way: a program in the object that the ABI crate does not name would
        // never be loaded.
        let types: BTreeSet<&str> = named.values().copied().collect();
        let unnamed: Vec<&String> = symbols
            .iter()
            .filter(|(name, (section, function))| {
                *function
                    && types.contains(program_type(section))
                    && !named.contains_key(name.as_str())
            })
            .map(|(name, _)| name)
            .collect();
        assert!(
            unnamed.is_empty(),
            "programs the ABI crate does not name: {unnamed:?}"
        );
    }

    #[test]
    fn a_packed_fork_and_an_encoded_device_read_back() {
        use fim_common::{dev, proc_fork};
        for (child, thread) in [(1, false), (4_194_304, true), (u32::MAX, true)] {
            let size = proc_fork::pack(child, thread);
            assert_eq!(proc_fork::child(size), child);
            assert_eq!(proc_fork::is_thread(size), thread);
        }
        // /dev/sda1 (8:1) and a device-mapper minor above 255.
        for (major, minor) in [(8, 1), (253, 1_048_575), (0, 0)] {
            let d = dev::encode(major, minor);
            assert_eq!((dev::major(d), dev::minor(d)), (major, minor));
        }
        assert_eq!(dev::encode(8, 1), 8 << 20 | 1, "the kernel's MKDEV");
    }
}
