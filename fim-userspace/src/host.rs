//! Who reports: this host's name and stable id, read once at start for every event's
//! `host` and `agent` (see [`fim_core::ecs::Reporter`]).

use fim_core::ecs::Reporter;

/// Where the host's stable id is kept (systemd's, then D-Bus's copy of it).
#[cfg(target_os = "linux")]
const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// This host as events name it: its host name (the kernel's, else `localhost`) and its
/// machine id when it has one.
pub fn reporter() -> Reporter {
    Reporter::new(host_name(), machine_id())
}

#[cfg(target_os = "linux")]
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|n| n.into_string().ok())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(target_os = "linux")]
fn machine_id() -> Option<String> {
    MACHINE_ID_FILES.iter().find_map(|path| {
        let id = std::fs::read_to_string(path).ok()?;
        let id = id.trim();
        (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

#[cfg(not(target_os = "linux"))]
fn host_name() -> String {
    std::env::var("COMPUTERNAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(not(target_os = "linux"))]
fn machine_id() -> Option<String> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_host_has_the_kernels_name() {
        let want = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        assert_eq!(super::host_name(), want.trim());
        if let Some(id) = super::machine_id() {
            assert!(id.len() >= 16, "{id}");
        }
    }
}
