//! The eBPF sensor: load the programs, tell them the kernel's layout and the watched roots,
//! attach one tier of them, and turn ring-buffer records into events.
//!
//! Tiers, best first: BPF LSM hooks, fentry on the `security_*` functions behind them (both
//! see kernel objects and pair each announced operation with its outcome; see
//! `fim-ebpf/src/hooks.rs` and [`outcomes`]), and syscall tracepoints (`fim-ebpf/src/programs.rs`).
//! One object holds them all; which ones load is decided at run time.

pub mod btf;
pub mod decode;
pub mod identities;
pub mod object;
pub mod outcomes;
pub mod syscalls;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, MapData, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{FEntry, FExit, Lsm, TracePoint},
};
use fim_common::{
    DROP_REASONS, MAX_WATCHED_OBJECTS, OBJECT_BY_INODE, ObjectKey, ROOT_KEY_LEN, TracepointFields,
    WatchRoot, WatchedObject, globals, maps, programs, root_flags,
};
use log::{debug, info, warn};
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tokio_util::sync::CancellationToken;

use fim_core::{
    event::FileEvent,
    telemetry::{self, Internal, LossCause, NotReported, Telemetry},
    watch::{ScanRoot, WatchSet},
};

use crate::sensors::{
    proctable::ProcTable,
    seed::{self, Place},
};

use self::{
    decode::{Decoded, decode_record},
    identities::Identities,
};

/// An eBPF tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// BPF LSM hooks paired with fexit outcomes.
    Lsm,
    /// fentry on the `security_*` functions, paired with fexit outcomes.
    Fentry,
    /// Syscall tracepoints.
    Tracepoint,
}

impl Tier {
    /// Every tier, best first.
    pub const BEST_FIRST: [Self; 3] = [Self::Lsm, Self::Fentry, Self::Tracepoint];

    /// The sensor's name in events.
    pub fn sensor_name(self) -> &'static str {
        match self {
            Self::Lsm => "ebpf-lsm",
            Self::Fentry => "ebpf-fentry",
            Self::Tracepoint => "ebpf-tracepoint",
        }
    }

    /// For messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Lsm => "eBPF LSM tier (BPF LSM hooks + fexit outcomes)",
            Self::Fentry => "eBPF fentry tier (fentry on security_* + fexit outcomes)",
            Self::Tracepoint => "eBPF tracepoint tier (syscall tracepoints)",
        }
    }
}

/// After a drain that found records, wait this long before the next drain instead of
/// waiting for a wakeup: records arriving meanwhile do not wake us (see
/// `fim-ebpf/src/emit.rs`), so a high rate is read in batches, one wakeup per pause rather
/// than one per record or two. A drain that finds nothing goes back to waiting for a wakeup:
/// idle, nothing runs, and the first event after a quiet spell is read as it comes.
pub const BATCH_PAUSE: Duration = Duration::from_millis(1);
/// How often the kernel's drop counters are read (and, idle, how often the sensor wakes).
pub const DROP_CHECK_INTERVAL: Duration = crate::sensors::HOUSEKEEPING_INTERVAL;

/// Why the sensor could not start.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// Not running as root.
    #[error("the eBPF sensor needs root (CAP_BPF and CAP_PERFMON); run fim as root")]
    NotRoot,
    /// No kernel BTF.
    #[error(
        "reading kernel BTF from `{path}`: {source} (a kernel built with CONFIG_DEBUG_INFO_BTF is required)"
    )]
    NoBtf {
        /// Where we looked.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// BTF present but missing something we need.
    #[error("kernel BTF: {0}")]
    Btf(#[from] btf::BtfError),
    /// tracefs is not mounted and could not be mounted.
    #[error("tracefs is not available at /sys/kernel/tracing and mounting it failed: {0}")]
    NoTracefs(std::io::Error),
    /// The object did not load.
    #[error("loading eBPF programs: {0}")]
    Load(#[from] aya::EbpfError),
    /// A map is missing or of the wrong type.
    #[error("eBPF map `{name}`: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        source: aya::maps::MapError,
    },
    /// A program failed to load or attach.
    #[error("eBPF program `{name}` ({what}): {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// Which tracepoint, or "load".
        what: String,
        /// Cause.
        source: aya::programs::ProgramError,
    },
    /// The kernel lacks a syscall tracepoint we cannot do without.
    #[error("this kernel has no tracepoint `syscalls:{0}`; the tracepoint sensor cannot run here")]
    MissingHook(String),
    /// Setting up the ring buffer poller.
    #[error("polling the ring buffer: {0}")]
    Poll(std::io::Error),
    /// Setting up the housekeeping timer.
    #[error("creating the sensor's housekeeping timer (timerfd): {0}")]
    Ticker(std::io::Error),
    /// BPF LSM is not in the kernel's active LSM list.
    #[error(
        "BPF LSM is not active on this kernel (active LSMs: {0}); it needs `bpf` in the `lsm=` boot parameter"
    )]
    LsmInactive(String),
    /// The kernel's function for a hook is missing.
    #[error("this kernel has no function `{0}` to attach to")]
    NoFunction(String),
    /// More watched roots (counted once per spelling) than the kernel's table holds.
    #[error(
        "{count} watched root spellings do not fit the kernel's table of {max}; watch fewer paths"
    )]
    TooManyRoots {
        /// How many the watch set has.
        count: usize,
        /// The table's capacity.
        max: u32,
    },
    /// Loading the kernel's BTF for attaching.
    #[error("reading kernel BTF for attaching: {0}")]
    AttachBtf(#[from] aya::BtfError),
    /// A tier could not be set up on this kernel.
    #[error("the kernel refused the {tier}: {source}")]
    Refused {
        /// The tier.
        tier: &'static str,
        /// Why.
        source: Box<EbpfError>,
    },
}

/// A loaded and attached sensor.
pub struct EbpfSensor {
    // Dropping this detaches every program: nothing is pinned.
    _ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    drops: PerCpuArray<MapData, u64>,
    /// Where its losses and unreported announcements are counted.
    telemetry: Arc<Telemetry>,
    boot_to_unix_ns: i128,
    procs: Option<Arc<Mutex<ProcTable>>>,
    /// The sensor's name in events.
    name: &'static str,
    pairing: outcomes::Pairing,
    /// When the drop counters were last read (process-feed mode).
    last_drop_check: std::time::Instant,
    /// Names of what the kernel matches by identity.
    identities: Identities,
    /// The watched roots whose objects the kernel knows.
    roots: Vec<ScanRoot>,
}

/// The offset of `field` in a tracefs `format` description. Pure (unit-tested below).
pub fn tracepoint_field_offset(format: &str, field: &str) -> Option<u32> {
    // Lines look like "\tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;".
    format.lines().find_map(|l| {
        let decl = l.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?.trim_end_matches("[]");
        (name == field).then_some(())?;
        rest.trim()
            .strip_prefix("offset:")?
            .split(';')
            .next()?
            .parse()
            .ok()
    })
}

/// The kernel's encoding of a `st_dev` device number.
fn kernel_dev(dev: u64) -> u32 {
    fim_common::dev::encode(libc::major(dev), libc::minor(dev))
}

/// Opens `WATCHED_OBJECTS`.
fn objects_table(
    ebpf: &mut Ebpf,
) -> Result<aya::maps::HashMap<&mut MapData, ObjectKey, WatchedObject>, EbpfError> {
    let map = ebpf.map_mut(maps::WATCHED_OBJECTS).ok_or(EbpfError::Map {
        name: maps::WATCHED_OBJECTS,
        source: aya::maps::MapError::InvalidName {
            name: maps::WATCHED_OBJECTS.into(),
        },
    })?;
    aya::maps::HashMap::try_from(map).map_err(|source| EbpfError::Map {
        name: maps::WATCHED_OBJECTS,
        source,
    })
}

/// Adds to `WATCHED_OBJECTS` the objects of `roots` (a whole watch set's at start, a
/// reload's additions later): each root as it is on disk, and each watched file below
/// with other hard links, named in `ids`. A root object already there (the same
/// directory watched with and without recursion) keeps its id and gains the new flags.
fn watch_objects(
    ebpf: &mut Ebpf,
    roots: &[ScanRoot],
    ids: &mut Identities,
) -> Result<(), EbpfError> {
    use std::os::unix::fs::MetadataExt;
    let mut table = objects_table(ebpf)?;
    let mut refused = 0u64;
    let (mut root_count, mut linked) = (0u64, 0u64);
    seed::walk_roots(roots, |path, meta, place, root| {
        let key = ObjectKey {
            ino: meta.ino(),
            dev: kernel_dev(meta.dev()),
            _pad: 0,
        };
        let is_root = matches!(place, Place::Root);
        let mut value = match place {
            Place::Root => {
                let flags = match root {
                    ScanRoot::Tree(_) => root_flags::SELF | root_flags::RECURSIVE,
                    ScanRoot::Exact(_) => root_flags::SELF,
                    ScanRoot::Children { .. } => root_flags::CHILDREN,
                };
                root_count += 1;
                WatchedObject {
                    id: ids.add_root(path.to_vec()),
                    flags,
                }
            }
            Place::Below if meta.is_file() && meta.nlink() > 1 && root.covers(path) => {
                ids.learn((key.dev, key.ino), path.to_vec());
                linked += 1;
                WatchedObject {
                    id: OBJECT_BY_INODE,
                    flags: root_flags::SELF,
                }
            }
            _ => return,
        };
        // A directory watched without recursion is two scan roots (itself, its entries):
        // one object with both flags.
        if is_root && let Ok(existing) = table.get(&key, 0) {
            value.flags |= existing.flags;
            value.id = existing.id;
        }
        if table.insert(key, value, 0).is_err() {
            refused += 1;
        }
    });
    info!("watched by identity: {root_count} roots, {linked} files with other hard links");
    if refused > 0 {
        warn!(
            "{refused} watched objects did not fit the kernel's table ({MAX_WATCHED_OBJECTS}); they are watched by their path only"
        );
    }
    Ok(())
}

/// Takes out of `WATCHED_OBJECTS` what a reload stopped watching: the objects of roots
/// `gone` (unless `watch` still has a root there) and the files with other names that
/// `watch` no longer covers.
fn unwatch_objects(
    ebpf: &mut Ebpf,
    gone: &[ScanRoot],
    watch: &WatchSet,
    ids: &mut Identities,
) -> Result<(), EbpfError> {
    use std::os::unix::{ffi::OsStrExt, fs::MetadataExt};
    let mut table = objects_table(ebpf)?;
    let still: std::collections::HashSet<Vec<u8>> = watch
        .scan_roots()
        .iter()
        .map(|r| r.path().to_vec())
        .collect();
    for root in gone {
        let path = root.path();
        if still.contains(path) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(path)) else {
            continue;
        };
        let key = ObjectKey {
            ino: meta.ino(),
            dev: kernel_dev(meta.dev()),
            _pad: 0,
        };
        if let (Ok(entry), Some(id)) = (table.get(&key, 0), ids.root_id(path))
            && entry.id == id
        {
            let _ = table.remove(&key);
        }
    }
    for (dev, ino) in ids.forget_files(|path| watch.matches(path)) {
        let key = ObjectKey { ino, dev, _pad: 0 };
        if table.get(&key, 0).is_ok_and(|e| e.id == OBJECT_BY_INODE) {
            let _ = table.remove(&key);
        }
    }
    Ok(())
}

/// Makes `WATCH_ROOTS` hold `watch`'s kernel prefixes, the same way: prefixes watched
/// before and after are updated in place, new ones go in before old ones leave (unless
/// the table is too full for both).
fn fill_watch_roots(ebpf: &mut Ebpf, watch: &WatchSet) -> Result<(), EbpfError> {
    let map = ebpf.map_mut(maps::WATCH_ROOTS).ok_or(EbpfError::Map {
        name: maps::WATCH_ROOTS,
        source: aya::maps::MapError::InvalidName {
            name: maps::WATCH_ROOTS.into(),
        },
    })?;
    let mut trie: LpmTrie<_, [u8; ROOT_KEY_LEN], WatchRoot> =
        LpmTrie::try_from(map).map_err(|source| EbpfError::Map {
            name: maps::WATCH_ROOTS,
            source,
        })?;
    let roots = watch.kernel_roots();
    if roots.len() > fim_common::MAX_WATCH_ROOTS as usize {
        return Err(EbpfError::TooManyRoots {
            count: roots.len(),
            max: fim_common::MAX_WATCH_ROOTS,
        });
    }
    let wanted: Vec<(Key<[u8; ROOT_KEY_LEN]>, WatchRoot)> = roots
        .into_iter()
        .map(|(prefix, root)| {
            let mut data = [0u8; ROOT_KEY_LEN];
            data[..prefix.len()].copy_from_slice(&prefix);
            (Key::new((prefix.len() * 8) as u32, data), root)
        })
        .collect();
    let same = |a: &Key<[u8; ROOT_KEY_LEN]>, b: &Key<[u8; ROOT_KEY_LEN]>| {
        a.prefix_len() == b.prefix_len() && a.data() == b.data()
    };
    let stale: Vec<Key<[u8; ROOT_KEY_LEN]>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.iter().any(|(w, _)| same(w, k)))
        .collect();
    let mut refused = Vec::new();
    for (key, root) in &wanted {
        if trie.insert(key, *root, 0).is_err() {
            refused.push((key, root));
        }
    }
    for key in &stale {
        let _ = trie.remove(key);
    }
    for (key, root) in refused {
        trie.insert(key, *root, 0)
            .map_err(|source| EbpfError::Map {
                name: maps::WATCH_ROOTS,
                source,
            })?;
    }
    Ok(())
}

/// Loads and attaches the process table's programs.
fn attach_process_programs(ebpf: &mut Ebpf) -> Result<(), EbpfError> {
    for (name, category, tracepoint) in programs::PROCESS_TRACEPOINTS {
        load_program(ebpf, name)?;
        attach_in(ebpf, name, category, tracepoint)?;
    }
    info!(
        "eBPF process table attached to {}",
        programs::PROCESS_TRACEPOINTS.map(|(_, _, t)| t).join(", ")
    );
    Ok(())
}

/// The field offsets of the process-table tracepoints on this kernel, from tracefs (the
/// defaults of kernels 6.1 to 6.18 where a format file cannot be read).
fn tracepoint_fields() -> TracepointFields {
    let format = |category: &str, name: &str| {
        std::fs::read_to_string(format!(
            "/sys/kernel/tracing/events/{category}/{name}/format"
        ))
        .unwrap_or_default()
    };
    let (newtask, rename, attach) = (
        format("task", "task_newtask"),
        format("task", "task_rename"),
        format("cgroup", "cgroup_attach_task"),
    );
    let d = TracepointFields::DEFAULT;
    let at = |format: &str, field: &str, default: u32| {
        tracepoint_field_offset(format, field).unwrap_or(default)
    };
    TracepointFields {
        newtask_pid: at(&newtask, "pid", d.newtask_pid),
        newtask_flags: at(&newtask, "clone_flags", d.newtask_flags),
        rename_pid: at(&rename, "pid", d.rename_pid),
        rename_newcomm: at(&rename, "newcomm", d.rename_newcomm),
        attach_root: at(&attach, "dst_root", d.attach_root),
        attach_id: at(&attach, "dst_id", d.attach_id),
        attach_pid: at(&attach, "pid", d.attach_pid),
        _pad: 0,
    }
}

fn mount_tracefs_if_needed() -> Result<(), EbpfError> {
    if Path::new("/sys/kernel/tracing/events").exists() {
        return Ok(());
    }
    info!("mounting tracefs at /sys/kernel/tracing");
    let mounted = mount_pseudo("tracefs", "/sys/kernel/tracing");
    // Another process (a second fim, say) may have mounted it meanwhile.
    if mounted.is_ok() || Path::new("/sys/kernel/tracing/events").exists() {
        Ok(())
    } else {
        mounted.map_err(EbpfError::NoTracefs)
    }
}

/// Mounts the kernel's pseudo file system `fstype` at `target`.
fn mount_pseudo(fstype: &str, target: &str) -> std::io::Result<()> {
    Ok(nix::mount::mount(
        Some(fstype),
        target,
        Some(fstype),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )?)
}

fn tracepoint_exists(name: &str) -> bool {
    tracepoint_exists_in("syscalls", name)
}

fn tracepoint_exists_in(category: &str, name: &str) -> bool {
    Path::new("/sys/kernel/tracing/events")
        .join(category)
        .join(name)
        .exists()
}

/// Offset from `CLOCK_BOOTTIME` (what the kernel stamps) to `CLOCK_REALTIME`.
fn boot_to_unix_ns() -> i128 {
    use nix::time::{ClockId, clock_gettime};
    let read = |clock| {
        // Both clocks always exist on Linux; a failure would read as 0 (no offset).
        clock_gettime(clock).map_or(0, |ts| {
            i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec())
        })
    };
    read(ClockId::CLOCK_REALTIME) - read(ClockId::CLOCK_BOOTTIME)
}

fn attach(ebpf: &mut Ebpf, program: &'static str, tracepoint: &str) -> Result<(), EbpfError> {
    attach_in(ebpf, program, "syscalls", tracepoint)
}

fn attach_in(
    ebpf: &mut Ebpf,
    name: &'static str,
    category: &str,
    tracepoint: &str,
) -> Result<(), EbpfError> {
    program::<TracePoint>(ebpf, name)?
        .attach(category, tracepoint)
        .map(drop)
        .map_err(program_error(
            name,
            format!("attach {category}:{tracepoint}"),
        ))
}

fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), EbpfError> {
    program::<TracePoint>(ebpf, name)?
        .load()
        .map_err(program_error(name, "load".into()))
}

/// Typed access to program `name` of the object.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, EbpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| EbpfError::MissingHook(format!("(program {name} not in object)")))?
        .try_into()
        .map_err(|source| EbpfError::Program {
            name,
            what: "type".into(),
            source,
        })
}

fn program_error(
    name: &'static str,
    what: String,
) -> impl FnOnce(aya::programs::ProgramError) -> EbpfError {
    move |source| EbpfError::Program { name, what, source }
}

/// The active LSMs, mounting securityfs if needed; `None` when they cannot be read.
fn active_lsms() -> Option<String> {
    let list = Path::new("/sys/kernel/security/lsm");
    if !list.exists() {
        let _ = mount_pseudo("securityfs", "/sys/kernel/security");
    }
    std::fs::read_to_string(list)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The tracepoint tier: every followed syscall's entry and exit, plus writes and closes.
fn attach_syscall_tier(ebpf: &mut Ebpf, kernel: &KernelBtf) -> Result<(), EbpfError> {
    let table = syscalls::table();
    {
        let map = ebpf.map_mut(maps::SYSCALLS).ok_or(EbpfError::Map {
            name: maps::SYSCALLS,
            source: aya::maps::MapError::InvalidName {
                name: maps::SYSCALLS.into(),
            },
        })?;
        let mut specs: Array<_, fim_common::SyscallSpec> =
            Array::try_from(map).map_err(|source| EbpfError::Map {
                name: maps::SYSCALLS,
                source,
            })?;
        for f in &table {
            specs
                .set(f.nr, f.spec, 0)
                .map_err(|source| EbpfError::Map {
                    name: maps::SYSCALLS,
                    source,
                })?;
        }
    }
    for p in [
        programs::SAVE_ARGS,
        programs::EXIT_PATH,
        programs::EXIT_FD,
        programs::EXIT_TWO_PATHS,
        programs::EXIT_OPEN,
    ] {
        load_program(ebpf, p)?;
    }
    let mut attached = 0;
    for f in &table {
        let (enter, exit) = (
            format!("sys_enter_{}", f.name),
            format!("sys_exit_{}", f.name),
        );
        if !tracepoint_exists(&enter) || !tracepoint_exists(&exit) {
            if f.required {
                return Err(EbpfError::MissingHook(enter));
            }
            debug!("kernel has no syscalls:{enter}; skipping {}", f.name);
            continue;
        }
        // The exit first: arguments saved at an entry are always taken at its exit (an
        // attribute call counted in at entry is counted out there).
        attach(ebpf, f.exit_program(), &exit)?;
        attach(ebpf, programs::SAVE_ARGS, &enter)?;
        attached += 1;
    }
    attach_write_family(ebpf)?;
    attach_close_family(ebpf)?;
    debug!("tracepoints attached for {attached} syscalls");
    attach_ctime_updates(ebpf, kernel)
}

/// The `timestamp` tracepoints (6.13+) name the inode whose ctime a call updates: the
/// object a path-based attribute call (chmod, chown, truncate, utimensat, setxattr) acted
/// on, found by identity instead of read from the caller's string. Older kernels have no
/// such tracepoint: those calls are then known by their string only (logged).
fn attach_ctime_updates(ebpf: &mut Ebpf, kernel: &KernelBtf) -> Result<(), EbpfError> {
    use aya::programs::BtfTracePoint;
    let mut attached = Vec::new();
    for (name, tracepoint) in programs::CTIME_HOOKS {
        if !tracepoint_exists_in("timestamp", tracepoint) {
            continue;
        }
        let prog: &mut BtfTracePoint = program(ebpf, name)?;
        prog.load(tracepoint, &kernel.attach)
            .map_err(program_error(name, format!("load tp_btf/{tracepoint}")))?;
        prog.attach()
            .map_err(program_error(name, format!("attach tp_btf/{tracepoint}")))?;
        attached.push(tracepoint);
    }
    if attached.is_empty() {
        info!(
            "this kernel has no timestamp tracepoints (6.13+): path-based attribute calls are known by their string only"
        );
    } else {
        info!(
            "path-based attribute calls resolved in the kernel at timestamp:{}",
            attached.join(", timestamp:")
        );
    }
    Ok(())
}

/// Writes through syscalls, counted at the syscall (every tier uses these: the byte count and
/// the outcome are known only there).
fn attach_write_family(ebpf: &mut Ebpf) -> Result<(), EbpfError> {
    for p in [
        programs::ENTER_WRITE,
        programs::ENTER_WRITE_ARG2,
        programs::EXIT_WRITE,
    ] {
        load_program(ebpf, p)?;
    }
    for (name, enter) in syscalls::WRITE_FAMILY {
        attach(ebpf, enter, &format!("sys_enter_{name}"))?;
        attach(ebpf, programs::EXIT_WRITE, &format!("sys_exit_{name}"))?;
    }
    Ok(())
}

/// The tracepoint tier's closes: `close` and `dup2`/`dup3` over a descriptor.
fn attach_close_family(ebpf: &mut Ebpf) -> Result<(), EbpfError> {
    for p in [programs::ENTER_CLOSE, programs::ENTER_DUP] {
        load_program(ebpf, p)?;
    }
    for (name, program) in syscalls::CLOSE_FAMILY {
        attach(ebpf, program, &format!("sys_enter_{name}"))?;
    }
    Ok(())
}

/// The running kernel's BTF, read once per load: what our parser found (field offsets,
/// which of the functions the programs attach to exist and whether they return a pointer)
/// and aya's view (loading and attaching). Our parser's tables are dropped before aya
/// parses, so the two never take memory at once.
struct KernelBtf {
    functions: Functions,
    attach: aya::Btf,
    offsets: fim_common::Offsets,
}

/// The kernel functions the programs may attach to, by name: whether each returns a
/// pointer; absent: this kernel has no such function.
#[derive(Debug, Default)]
struct Functions(std::collections::HashMap<String, bool>);

impl Functions {
    /// Looks up every function any tier attaches to.
    fn of(kbtf: &btf::Btf) -> Self {
        let names = programs::PRE_HOOKS
            .iter()
            .flat_map(|h| {
                [
                    format!("bpf_lsm_{}", h.hook),
                    format!("security_{}", h.hook),
                ]
            })
            .chain(programs::OUTCOMES.iter().map(|(_, f, _)| (*f).to_owned()))
            .chain(
                programs::FUNCTION_HOOKS
                    .iter()
                    .map(|(_, f, _)| (*f).to_owned()),
            );
        Self(kbtf.functions_returning_pointers(&names.collect()))
    }

    /// Whether `name` returns a pointer; `None` if this kernel has no such function.
    fn function_returns_pointer(&self, name: &str) -> Option<bool> {
        self.0.get(name).copied()
    }
}

/// The LSM or fentry tier: every pre-operation hook and every outcome function. Hooks the
/// kernel does not have (6.1 has no `file_truncate` or ACL hooks) are skipped when optional.
fn attach_kernel_object_tier(
    ebpf: &mut Ebpf,
    kernel: &KernelBtf,
    tier: Tier,
) -> Result<(), EbpfError> {
    let (kbtf, attach_btf) = (&kernel.functions, &kernel.attach);
    let mut skipped = Vec::new();
    for hook in programs::PRE_HOOKS {
        let (name, target) = match tier {
            Tier::Lsm => (hook.lsm, format!("bpf_lsm_{}", hook.hook)),
            _ => (hook.fentry, format!("security_{}", hook.hook)),
        };
        if kbtf.function_returns_pointer(&target).is_none() {
            if hook.optional {
                skipped.push(hook.hook);
                continue;
            }
            return Err(EbpfError::NoFunction(target));
        }
        if tier == Tier::Lsm {
            let prog: &mut Lsm = program(ebpf, name)?;
            prog.load(hook.hook, attach_btf)
                .map_err(program_error(name, format!("load lsm/{}", hook.hook)))?;
            prog.attach()
                .map_err(program_error(name, format!("attach lsm/{}", hook.hook)))?;
        } else {
            let prog: &mut FEntry = program(ebpf, name)?;
            prog.load(&target, attach_btf)
                .map_err(program_error(name, format!("load fentry/{target}")))?;
            prog.attach()
                .map_err(program_error(name, format!("attach fentry/{target}")))?;
        }
    }
    for (name, function, optional) in programs::OUTCOMES {
        if kbtf.function_returns_pointer(function).is_none() {
            if optional {
                skipped.push(function);
                continue;
            }
            return Err(EbpfError::NoFunction(function.into()));
        }
        let prog: &mut FExit = program(ebpf, name)?;
        prog.load(function, attach_btf)
            .map_err(program_error(name, format!("load fexit/{function}")))?;
        prog.attach()
            .map_err(program_error(name, format!("attach fexit/{function}")))?;
    }
    // Every release of a descriptor, including io_uring closes and process exit; close(2)
    // calls filp_flush directly where it exists (6.8+).
    for (name, function, optional) in programs::FUNCTION_HOOKS {
        if kbtf.function_returns_pointer(function).is_none() {
            if !optional {
                return Err(EbpfError::NoFunction(function.into()));
            }
            skipped.push(function);
            continue;
        }
        let prog: &mut FEntry = program(ebpf, name)?;
        prog.load(function, attach_btf)
            .map_err(program_error(name, format!("load fentry/{function}")))?;
        prog.attach()
            .map_err(program_error(name, format!("attach fentry/{function}")))?;
    }
    if !skipped.is_empty() {
        debug!("not on this kernel, skipped: {}", skipped.join(", "));
    }
    Ok(())
}

impl EbpfSensor {
    /// Loads and attaches exactly `tier`; an error says why the kernel refused it.
    pub fn start(
        watch: &WatchSet,
        tier: Tier,
        telemetry: &Arc<Telemetry>,
    ) -> Result<Self, EbpfError> {
        Self::start_tier(watch, tier, telemetry).map_err(|e| match e {
            e @ (EbpfError::NotRoot | EbpfError::NoBtf { .. } | EbpfError::TooManyRoots { .. }) => {
                e
            }
            e => EbpfError::Refused {
                tier: tier.describe(),
                source: Box::new(e),
            },
        })
    }

    /// Starts the first of `tiers` this kernel allows, logging why better ones were refused;
    /// the last tier's error if none loads.
    pub fn start_best(
        watch: &WatchSet,
        tiers: &[Tier],
        telemetry: &Arc<Telemetry>,
    ) -> Result<Self, EbpfError> {
        let mut last = None;
        for &tier in tiers {
            match Self::start(watch, tier, telemetry) {
                Ok(s) => return Ok(s),
                Err(
                    e @ (EbpfError::NotRoot
                    | EbpfError::NoBtf { .. }
                    | EbpfError::TooManyRoots { .. }),
                ) => return Err(e),
                Err(e) => {
                    info!("{e}; trying the next tier");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(EbpfError::MissingHook("(no tier asked for)".into())))
    }

    /// Loads the object: the kernel's layout and the watched roots go in before anything is
    /// attached.
    fn load(watch: &WatchSet) -> Result<(Ebpf, KernelBtf), EbpfError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(EbpfError::NotRoot);
        }
        // aya's loader parses the kernel's BTF on its own when created (about 20 MiB on
        // 6.18), and this function parses it again below, for attaching. Created first and
        // emptied at once, the loader's copy is gone before ours is made: two copies held
        // together were the daemon's start-up peak.
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        let btf_path = "/sys/kernel/btf/vmlinux";
        let blob = std::fs::read(btf_path).map_err(|source| EbpfError::NoBtf {
            path: btf_path.into(),
            source,
        })?;
        let (offsets, functions) = {
            let kbtf = btf::Btf::parse(&blob)?;
            (btf::resolve_offsets(&kbtf)?, Functions::of(&kbtf))
        };
        let attach_btf = aya::Btf::parse(&blob, aya::Endianness::default())?;
        drop(blob);
        debug!("kernel offsets: {offsets:?}");
        mount_tracefs_if_needed()?;

        let self_tgid = std::process::id();
        let fields = tracepoint_fields();
        let returns_ptr: u32 = programs::OUTCOMES
            .iter()
            .enumerate()
            .filter(|(_, (_, function, _))| {
                functions.function_returns_pointer(function) == Some(true)
            })
            .fold(0, |bits, (i, _)| bits | 1 << i);
        let mut ebpf = loader
            .btf(Some(&attach_btf))
            .override_global(globals::OFFSETS, &offsets, true)
            .override_global(globals::SELF_TGID, &self_tgid, true)
            .override_global(globals::TRACEPOINT_FIELDS, &fields, true)
            .override_global(globals::OUTCOME_RETURNS_PTR, &returns_ptr, true)
            .load(object::OBJECT)?;
        fill_watch_roots(&mut ebpf, watch)?;
        Ok((
            ebpf,
            KernelBtf {
                functions,
                attach: attach_btf,
                offsets,
            },
        ))
    }

    fn start_tier(
        watch: &WatchSet,
        tier: Tier,
        telemetry: &Arc<Telemetry>,
    ) -> Result<Self, EbpfError> {
        if tier == Tier::Lsm
            && let Some(lsms) = active_lsms()
            && !lsms.split(',').any(|l| l == "bpf")
        {
            return Err(EbpfError::LsmInactive(lsms));
        }
        let (mut ebpf, kernel) = Self::load(watch)?;
        if tier != Tier::Tracepoint && kernel.offsets.sb_mounts_style == 0 {
            return Err(EbpfError::MissingHook(
                "(kernel BTF: no known link from a file system to its mounts)".into(),
            ));
        }
        match tier {
            Tier::Tracepoint => attach_syscall_tier(&mut ebpf, &kernel)?,
            Tier::Lsm | Tier::Fentry => {
                attach_kernel_object_tier(&mut ebpf, &kernel, tier)?;
                attach_write_family(&mut ebpf)?;
            }
        }
        // The kernel's parsed BTF (about 11 MB, and the heap it grew) is needed no more once
        // the programs are attached: freed and given back before the walk and the ring
        // buffer's mapping (16 MB resident), so the start-up peak holds only one of them.
        drop(kernel);
        crate::memory::give_back();
        // Walked once the tier is accepted: a refused tier (`--sensor ebpf` tries up to
        // three) costs no walk of the watched trees.
        let mut identities = Identities::default();
        let roots = watch.scan_roots();
        watch_objects(&mut ebpf, &roots, &mut identities)?;
        info!("sensor: {} attached", tier.describe());
        Self::finish_start(ebpf, tier.sensor_name(), (identities, roots), telemetry)
    }

    /// Only the process table's programs (for `--sensor auto` with fanotify).
    pub fn start_process_table(
        watch: &WatchSet,
        telemetry: &Arc<Telemetry>,
    ) -> Result<Self, EbpfError> {
        let (mut ebpf, _) = Self::load(watch)?;
        attach_process_programs(&mut ebpf)?;
        Self::finish_start(
            ebpf,
            Tier::Tracepoint.sensor_name(),
            (Identities::default(), Vec::new()),
            telemetry,
        )
    }

    /// Adds the process table's programs to a started tier, and routes their records into
    /// `table` (for `--sensor auto`, where fanotify's events are attributed through it).
    pub fn with_process_programs(
        mut self,
        table: Arc<Mutex<ProcTable>>,
    ) -> Result<Self, EbpfError> {
        attach_process_programs(&mut self._ebpf)?;
        Ok(self.with_process_table(table))
    }

    fn finish_start(
        mut ebpf: Ebpf,
        name: &'static str,
        (identities, roots): (Identities, Vec<ScanRoot>),
        telemetry: &Arc<Telemetry>,
    ) -> Result<Self, EbpfError> {
        let ring = RingBuf::try_from(ebpf.take_map(maps::EVENTS).ok_or(EbpfError::Map {
            name: maps::EVENTS,
            source: aya::maps::MapError::InvalidName {
                name: maps::EVENTS.into(),
            },
        })?)
        .map_err(|source| EbpfError::Map {
            name: maps::EVENTS,
            source,
        })?;
        let drops = PerCpuArray::try_from(ebpf.take_map(maps::DROPS).ok_or(EbpfError::Map {
            name: maps::DROPS,
            source: aya::maps::MapError::InvalidName {
                name: maps::DROPS.into(),
            },
        })?)
        .map_err(|source| EbpfError::Map {
            name: maps::DROPS,
            source,
        })?;

        // SAFETY: the ring buffer owns its fd, and the AsyncFd owns the ring buffer, so the fd
        // stays open and the same for the AsyncFd's whole life.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| EbpfError::Poll(e.into()))?;
        Ok(Self {
            _ebpf: ebpf,
            ring,
            drops,
            telemetry: telemetry.clone(),
            boot_to_unix_ns: boot_to_unix_ns(),
            procs: None,
            name,
            pairing: outcomes::Pairing::default(),
            last_drop_check: std::time::Instant::now(),
            identities,
            roots,
        })
    }

    /// A live reload: the kernel's filter follows `watch` from now on. What both sets
    /// watch stays watched throughout; what only the new one watches is watched before
    /// what only the old one watched is let go.
    pub fn rewatch(&mut self, watch: &WatchSet) -> Result<(), EbpfError> {
        fill_watch_roots(&mut self._ebpf, watch)?;
        // Only what changed is walked: a large tree watched before and after is not
        // walked again while the ring fills. Objects let go first, so the table has room.
        let roots = watch.scan_roots();
        let gone = fim_core::watch::added_roots(&roots, &self.roots);
        let added = fim_core::watch::added_roots(&self.roots, &roots);
        unwatch_objects(&mut self._ebpf, &gone, watch, &mut self.identities)?;
        watch_objects(&mut self._ebpf, &added, &mut self.identities)?;
        self.roots = roots;
        Ok(())
    }

    /// The sensor's name in events (`ebpf-lsm`, `ebpf-fentry`, `ebpf-tracepoint`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Where it counts.
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// Routes process records (exec/fork/exit) into `table`.
    pub fn with_process_table(mut self, table: Arc<Mutex<ProcTable>>) -> Self {
        self.procs = Some(table);
        self
    }

    /// Reads the kernel's per-CPU drop counters into the telemetry, logging any increase.
    fn check_drops(&self) {
        let mut totals = [0u64; DROP_REASONS as usize];
        for (index, total) in (0..DROP_REASONS).zip(totals.iter_mut()) {
            if let Ok(values) = self.drops.get(&index, 0) {
                *total = values.iter().sum();
            }
        }
        let [ring, pending, writers, outcomes, process] = totals;
        let t = &self.telemetry;
        // An operation's record and an announced operation's outcome: one operation each.
        let losses = [
            (
                LossCause::RingFull,
                ring + outcomes,
                "operations lost: ring buffer full",
            ),
            (
                LossCause::PendingFull,
                pending,
                "syscalls not followed: in-flight syscall table full",
            ),
            (
                LossCause::WritersFull,
                writers,
                "open files not followed: open-file table full",
            ),
        ];
        for (cause, total, what) in losses {
            let before = t.get(telemetry::SENSOR_LOST, &[cause.as_str()]);
            if t.emit(Internal::KernelLossTotal { cause, total }) > before {
                warn!("{what}: {} more, {total} so far", total - before);
            }
        }
        let before = t.get(telemetry::PROCESS_RECORDS_LOST, &[]);
        if t.emit(Internal::ProcessRecordsLostTotal { total: process }) > before {
            warn!(
                "process-table records lost: ring buffer full: {} more, {process} so far",
                process - before
            );
        }
    }

    /// Applies a process record to the process table, if this sensor feeds one.
    fn apply_process(&self, p: decode::ProcRecord) {
        if let Some(table) = &self.procs
            && let Ok(mut t) = table.lock()
        {
            t.apply(p);
        }
    }

    /// Counts and logs a record userspace could not decode.
    fn undecodable(&self, e: &decode::DecodeError) {
        self.telemetry.emit(Internal::Lost {
            cause: LossCause::Undecodable,
            operations: 1,
        });
        warn!("dropping an undecodable kernel record: {e}");
    }

    /// Applies every waiting process record to the process table (the process-table
    /// programs send nothing else).
    fn drain_processes(&mut self) {
        // The process-table programs send no file events: nothing lands here.
        let mut none = Vec::new();
        self.take_ready(&mut none);
    }

    /// Delivers events to `tx` until `shutdown`; then drains what is left and returns.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<FileEvent>,
        mut rewatch: crate::sensors::Rewatches,
        shutdown: CancellationToken,
    ) -> Result<(), EbpfError> {
        let drop_check =
            crate::sensors::ticker::Ticker::new(DROP_CHECK_INTERVAL).map_err(EbpfError::Ticker)?;
        let mut ready = Vec::new();
        let mut batched = false;
        let mut heartbeat = crate::sensors::Heartbeat::default();
        loop {
            heartbeat.beat(&self.telemetry);
            let stopping = tokio::select! {
                () = shutdown.cancelled() => true,
                () = self.readable(), if !batched => false,
                () = tokio::time::sleep(BATCH_PAUSE), if batched => false,
                () = drop_check.tick() => {
                    self.housekeeping();
                    false
                }
                r = rewatch.next() => {
                    crate::sensors::answer(r, |watch| Ok(self.rewatch(watch)?));
                    false
                }
            };
            let records = self.take_ready(&mut ready);
            batched = records > 0;
            for ev in ready.drain(..) {
                if tx.send(ev).await.is_err() {
                    self.finish();
                    return Ok(());
                }
            }
            if stopping {
                break;
            }
            if let Some(r) = rewatch.try_next() {
                crate::sensors::answer(r, |watch| Ok(self.rewatch(watch)?));
            }
        }
        self.finish();
        Ok(())
    }

    /// Waits until the kernel says records are waiting (see `fim-ebpf/src/emit.rs`).
    pub async fn readable(&self) {
        if let Ok(mut guard) = self.ring.readable().await {
            guard.clear_ready();
        }
    }

    /// What to do every [`DROP_CHECK_INTERVAL`]: read the kernel's loss counters, and give
    /// up on announced operations whose outcome never came.
    pub fn housekeeping(&mut self) {
        self.check_drops();
        self.pairing.expire(fim_core::event::unix_now_ns());
        self.count_not_reported();
    }

    /// Moves the pairing's counts of announcements not reported into the telemetry.
    fn count_not_reported(&mut self) {
        let [failed, expired, superseded] = self.pairing.take_counts();
        for (why, count) in [
            (NotReported::Failed, failed),
            (NotReported::Expired, expired),
            (NotReported::Superseded, superseded),
        ] {
            if count > 0 {
                self.telemetry.emit(Internal::NotReported { why, count });
            }
        }
    }

    /// The last loss check and a summary of what was announced but not reported.
    pub fn finish(&mut self) {
        self.check_drops();
        self.count_not_reported();
        let t = &self.telemetry;
        let not_reported = |why: NotReported| t.get(telemetry::NOT_REPORTED, &[why.as_str()]);
        let (failed, expired, superseded) = (
            not_reported(NotReported::Failed),
            not_reported(NotReported::Expired),
            not_reported(NotReported::Superseded),
        );
        if failed + expired + superseded > 0 {
            info!(
                "announced operations not reported: {failed} failed, {expired} without an outcome (refused \
                 before the operation ran, or its outcome was lost in the kernel), {superseded} superseded \
                 (an O_CREAT open's mknod check)"
            );
        }
    }

    /// Keeps the names of watched files with other hard links current, in event order: a
    /// new link to a watched file (the kernel already watches it by identity), its rename,
    /// and the removal of its watched name (then it is no longer watched by identity).
    fn track_identity(&mut self, ev: &FileEvent) {
        use fim_core::event::Action;
        let Some(inode) = ev.inode else {
            return;
        };
        let key = (fim_common::dev::encode(inode.major, inode.minor), inode.ino);
        match (ev.action, &ev.source) {
            (Action::Link, Some(existing)) => {
                self.identities.learn(key, existing.bytes.clone());
            }
            (Action::Rename, Some(old)) => {
                self.identities.moved(key, &old.bytes, &ev.path.bytes);
            }
            (Action::Unlink, _) => {
                if self.identities.forget(key, &ev.path.bytes)
                    && let Some(map) = self._ebpf.map_mut(maps::WATCHED_OBJECTS)
                    && let Ok(mut objects) =
                        aya::maps::HashMap::<_, ObjectKey, WatchedObject>::try_from(map)
                {
                    let _ = objects.remove(&ObjectKey {
                        ino: key.1,
                        dev: key.0,
                        _pad: 0,
                    });
                }
            }
            _ => {}
        }
    }

    /// Decodes every waiting record: file events go to `out` in ring order, process
    /// records to the process table. Returns how many records there were.
    pub fn take_ready(&mut self, out: &mut Vec<FileEvent>) -> usize {
        let mut records = 0;
        loop {
            let decoded = match self.ring.get_mut().next() {
                None => return records,
                Some(item) => {
                    records += 1;
                    decode_record(&item, self.boot_to_unix_ns, self.name, &self.identities)
                }
            };
            let ready = match decoded {
                Ok(Decoded::File(ev)) => Some(*ev),
                Ok(Decoded::Announced { tid, event }) => {
                    self.pairing.announce(tid, *event);
                    None
                }
                Ok(Decoded::Outcome { tid, failed, size }) => {
                    self.pairing.outcome(tid, failed, size)
                }
                Ok(Decoded::Process(p)) => {
                    self.apply_process(p);
                    None
                }
                Err(e) => {
                    self.undecodable(&e);
                    None
                }
            };
            if let Some(ev) = ready {
                self.track_identity(&ev);
                out.push(ev);
            }
        }
    }
}

impl crate::sensors::ProcessFeed for EbpfSensor {
    fn catch_up(&mut self) {
        self.drain_processes();
        if self.last_drop_check.elapsed() >= DROP_CHECK_INTERVAL {
            self.last_drop_check = std::time::Instant::now();
            self.check_drops();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tracepoint_field_offset;

    #[test]
    fn field_offsets_come_from_the_format_file() {
        let format = "name: task_newtask\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                      \tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\
                      \tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\
                      \tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;\n";
        assert_eq!(tracepoint_field_offset(format, "pid"), Some(8));
        assert_eq!(tracepoint_field_offset(format, "clone_flags"), Some(32));
        assert_eq!(tracepoint_field_offset(format, "common_pid"), None);
    }
}
