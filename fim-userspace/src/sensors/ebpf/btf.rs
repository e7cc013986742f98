//! Field offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The eBPF programs are compiled without any kernel layout; this module finds, by name, the
//! byte offset of every field they read and hands them over as [`Offsets`]. Members nested in
//! anonymous structs and unions (6.18 wraps `file.f_path` and `dentry.d_name` in unions) are
//! found by searching through them. Pure parsing: no I/O here.

use fim_common::Offsets;

/// What went wrong reading BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The blob is not BTF or is cut short.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// A struct the programs need is not in this kernel.
    #[error("kernel BTF has no `struct {0}`")]
    NoStruct(String),
    /// A field the programs need is not in this kernel's struct.
    #[error("kernel BTF has no field `{field}` in `struct {strukt}`")]
    NoField {
        /// The struct searched.
        strukt: String,
        /// The dotted field path.
        field: String,
    },
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_FUNC: u32 = 12;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    /// Referenced type for modifiers and typedefs.
    type_ref: u32,
    members: Vec<Member>,
}

/// A parsed BTF blob: just enough to look up struct members.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    let bytes = b.get(at..at + 4).ok_or(BtfError::Malformed("truncated"))?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl Btf {
    /// Parses a little-endian BTF blob.
    pub fn parse(blob: &[u8]) -> Result<Self, BtfError> {
        if blob.len() < 24 || blob[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(blob, 4)? as usize;
        let type_off = u32_at(blob, 8)? as usize;
        let type_len = u32_at(blob, 12)? as usize;
        let str_off = u32_at(blob, 16)? as usize;
        let str_len = u32_at(blob, 20)? as usize;
        let types_start = hdr_len + type_off;
        let type_bytes = blob
            .get(types_start..types_start + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = blob
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        // Type id 0 is `void`.
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            type_ref: 0,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < type_bytes.len() {
            let name_off = u32_at(type_bytes, at)?;
            let info = u32_at(type_bytes, at + 4)?;
            let size_or_type = u32_at(type_bytes, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + 12 * i;
                        let raw = u32_at(type_bytes, m + 8)?;
                        members.push(Member {
                            name_off: u32_at(type_bytes, m)?,
                            type_id: u32_at(type_bytes, m + 4)?,
                            bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                        });
                    }
                    12 * vlen
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                0 => return Err(BtfError::Malformed("type of kind 0")),
                k if k > KIND_ENUM64 => return Err(BtfError::Malformed("unknown type kind")),
                _ => 0,
            };
            at += extra;
            types.push(Type {
                name_off,
                kind,
                type_ref: size_or_type,
                members,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn struct_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| {
                t.kind == KIND_STRUCT
                    && !t.members.is_empty()
                    && self.name(t.name_off) == name.as_bytes()
            })
            .map(|i| i as u32)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.type_ref;
                }
                _ => break,
            }
        }
        id
    }

    /// Finds `name` among the members of type `id`, looking through anonymous members.
    /// Returns (bit offset, member type id).
    fn find_member(&self, id: u32, name: &[u8], depth: u32) -> Option<(u32, u32)> {
        let t = self.types.get(self.resolve(id) as usize)?;
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for m in &t.members {
            if self.name(m.name_off) == name {
                return Some((m.bit_offset, m.type_id));
            }
        }
        for m in t.members.iter().filter(|m| m.name_off == 0) {
            if let Some((off, ty)) = self.find_member(m.type_id, name, depth + 1) {
                return Some((m.bit_offset + off, ty));
            }
        }
        None
    }

    /// Which of the functions in `names` the kernel has (a BTF `FUNC`), each with whether it
    /// returns a pointer (`false`: any other return type), in one pass over the types; a
    /// function the kernel lacks is absent from the result.
    pub fn functions_returning_pointers(
        &self,
        names: &std::collections::HashSet<String>,
    ) -> std::collections::HashMap<String, bool> {
        self.types
            .iter()
            .filter(|t| t.kind == KIND_FUNC)
            .filter_map(|t| {
                let name = std::str::from_utf8(self.name(t.name_off)).ok()?;
                let name = names.get(name)?;
                Some((name.clone(), self.returns_pointer(t)?))
            })
            .collect()
    }

    /// Whether the `FUNC` type `func` returns a pointer.
    fn returns_pointer(&self, func: &Type) -> Option<bool> {
        let proto = self.types.get(func.type_ref as usize)?;
        if proto.kind != KIND_FUNC_PROTO {
            return None;
        }
        let ret = self.types.get(self.resolve(proto.type_ref) as usize)?;
        Some(ret.kind == KIND_PTR)
    }

    /// Byte offset of the dotted field path `field` (for example `d_name.len`) in `struct strukt`.
    pub fn offset_of(&self, strukt: &str, field: &str) -> Result<u32, BtfError> {
        let mut id = self
            .struct_id(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let mut bits = 0;
        for part in field.split('.') {
            let (off, ty) =
                self.find_member(id, part.as_bytes(), 0)
                    .ok_or_else(|| BtfError::NoField {
                        strukt: strukt.to_owned(),
                        field: field.to_owned(),
                    })?;
            bits += off;
            id = ty;
        }
        Ok(bits / 8)
    }
}

/// Every offset the programs use, from this kernel's BTF.
pub fn resolve_offsets(btf: &Btf) -> Result<Offsets, BtfError> {
    let o = |s: &str, f: &str| btf.offset_of(s, f);
    // 6.13 replaced `atomic_long_t f_count` (1 = one reference) by `file_ref_t f_ref`
    // (0 = one reference).
    let (file_count, file_count_one) = match o("file", "f_ref") {
        Ok(off) => (off, 0),
        Err(_) => (o("file", "f_count")?, 1),
    };
    // Mounts of a file system: a list_head through `mnt_instance` until 6.15, a chain of
    // `mnt_next_for_sb` pointers since. Only the kernel-object tiers need it (xattr hooks).
    let (sb_mounts_style, mount_instance) = match o("mount", "mnt_instance") {
        Ok(off) => (fim_common::MOUNTS_LIST_HEAD, off),
        Err(_) => match o("mount", "mnt_next_for_sb") {
            Ok(off) => (fim_common::MOUNTS_NEXT_FOR_SB, off),
            Err(_) => (0, 0),
        },
    };
    Ok(Offsets {
        task_files: o("task_struct", "files")?,
        task_fs: o("task_struct", "fs")?,
        task_real_parent: o("task_struct", "real_parent")?,
        task_group_leader: o("task_struct", "group_leader")?,
        task_tgid: o("task_struct", "tgid")?,
        // Boot-based, as /proc/<pid>/stat's start time: one clock for every source.
        task_start_time: o("task_struct", "start_boottime")?,
        task_mm: o("task_struct", "mm")?,
        task_cred: o("task_struct", "cred")?,
        files_fdt: o("files_struct", "fdt")?,
        fdt_max_fds: o("fdtable", "max_fds")?,
        fdt_fd: o("fdtable", "fd")?,
        fs_pwd: o("fs_struct", "pwd")?,
        path_mnt: o("path", "mnt")?,
        path_dentry: o("path", "dentry")?,
        file_path: o("file", "f_path")?,
        file_inode: o("file", "f_inode")?,
        file_mode: o("file", "f_mode")?,
        dentry_parent: o("dentry", "d_parent")?,
        dentry_name_len: o("dentry", "d_name.len")?,
        dentry_name_ptr: o("dentry", "d_name.name")?,
        inode_ino: o("inode", "i_ino")?,
        inode_mode: o("inode", "i_mode")?,
        inode_sb: o("inode", "i_sb")?,
        sb_dev: o("super_block", "s_dev")?,
        mount_mnt: o("mount", "mnt")?,
        mount_parent: o("mount", "mnt_parent")?,
        mount_mountpoint: o("mount", "mnt_mountpoint")?,
        vfsmount_root: o("vfsmount", "mnt_root")?,
        mm_exe_file: o("mm_struct", "exe_file")?,
        cred_uid: o("cred", "uid")?,
        cred_gid: o("cred", "gid")?,
        cred_euid: o("cred", "euid")?,
        cred_egid: o("cred", "egid")?,
        file_count,
        file_count_one,
        file_flags: o("file", "f_flags")?,
        dentry_inode: o("dentry", "d_inode")?,
        dentry_sb: o("dentry", "d_sb")?,
        sb_mounts: o("super_block", "s_mounts").unwrap_or(0),
        sb_mounts_style: if o("super_block", "s_mounts").is_ok() {
            sb_mounts_style
        } else {
            0
        },
        mount_instance,
        mount_ns: o("mount", "mnt_ns")?,
        task_nsproxy: o("task_struct", "nsproxy")?,
        nsproxy_mnt_ns: o("nsproxy", "mnt_ns")?,
        iattr_size: o("iattr", "ia_size")?,
        iattr_valid: o("iattr", "ia_valid")?,
        inode_dentry: o("inode", "i_dentry")?,
        dentry_alias: o("dentry", "d_u")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from (name, kind, size_or_type, members) rows.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn push(&mut self, name: &str, kind: u32, size_or_type: u32, members: &[(&str, u32, u32)]) {
            let name_off = self.s(name);
            let info = (kind << 24) | members.len() as u32;
            for v in [name_off, info, size_or_type] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            if kind == KIND_INT {
                self.types.extend_from_slice(&0u32.to_le_bytes());
            }
            for &(n, ty, bits) in members {
                let n = self.s(n);
                for v in [n, ty, bits] {
                    self.types.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        fn finish(self) -> Vec<u8> {
            let mut out = vec![0x9f, 0xeb, 1, 0];
            for v in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_typedefs() {
        let mut b = Builder::new();
        b.push("unsigned int", KIND_INT, 4, &[]); // 1
        b.push("", KIND_STRUCT, 8, &[("hash", 1, 0), ("len", 1, 32)]); // 2
        b.push("", KIND_UNION, 8, &[("", 2, 0), ("hash_len", 1, 0)]); // 3
        b.push("qstr", KIND_STRUCT, 16, &[("", 3, 0), ("name", 1, 64)]); // 4
        b.push("", KIND_CONST, 4, &[]); // 5: const qstr
        b.push("", KIND_UNION, 16, &[("d_name", 5, 0), ("__d_name", 4, 0)]); // 6
        b.push(
            "dentry",
            KIND_STRUCT,
            64,
            &[("d_parent", 1, 64), ("", 6, 256)],
        ); // 7
        let btf = Btf::parse(&b.finish()).expect("parses");
        assert_eq!(btf.offset_of("dentry", "d_parent").expect("d_parent"), 8);
        assert_eq!(btf.offset_of("dentry", "d_name.len").expect("len"), 32 + 4);
        assert_eq!(
            btf.offset_of("dentry", "d_name.name").expect("name"),
            32 + 8
        );
        let err = btf.offset_of("dentry", "d_inode").expect_err("missing");
        assert_eq!(
            err.to_string(),
            "kernel BTF has no field `d_inode` in `struct dentry`"
        );
        assert!(matches!(
            btf.offset_of("inode", "i_ino"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn tells_functions_returning_pointers_from_those_returning_ints() {
        let mut b = Builder::new();
        b.push("int", KIND_INT, 4, &[]); // 1
        b.push("", KIND_PTR, 1, &[]); // 2: int *
        b.push("", KIND_FUNC_PROTO, 2, &[]); // 3: int *(void)
        b.push("vfs_mkdir", KIND_FUNC, 3, &[]); // 4
        b.push("", KIND_FUNC_PROTO, 1, &[]); // 5: int (void)
        b.push("vfs_rmdir", KIND_FUNC, 5, &[]); // 6
        b.push("ptr_t", KIND_TYPEDEF, 2, &[]); // 7
        b.push("", KIND_FUNC_PROTO, 7, &[]); // 8: ptr_t (void)
        b.push("through_typedef", KIND_FUNC, 8, &[]); // 9
        let btf = Btf::parse(&b.finish()).expect("parses");
        let names = ["vfs_mkdir", "vfs_rmdir", "through_typedef", "vfs_nothing"]
            .map(str::to_owned)
            .into();
        let found = btf.functions_returning_pointers(&names);
        let function_returns_pointer = |name: &str| found.get(name).copied();
        assert_eq!(function_returns_pointer("vfs_mkdir"), Some(true));
        assert_eq!(function_returns_pointer("vfs_rmdir"), Some(false));
        assert_eq!(function_returns_pointer("through_typedef"), Some(true));
        assert_eq!(function_returns_pointer("vfs_nothing"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, not btf at all").is_err());
        let mut b = Builder::new();
        b.push("x", KIND_STRUCT, 8, &[("a", 1, 0)]);
        let mut blob = b.finish();
        blob.truncate(blob.len() - 10);
        assert!(Btf::parse(&blob).is_err());
    }
}
