//! `fim.exe service install|uninstall`, and running under the service control manager
//! (`fim.exe service run`, which the installed service's command line names).

use std::{ptr::null, sync::OnceLock};

use log::error;
use windows_sys::Win32::{
    Foundation::ERROR_SERVICE_SPECIFIC_ERROR,
    System::Services::{
        CloseServiceHandle, CreateServiceW, DeleteService, OpenSCManagerW, OpenServiceW,
        RegisterServiceCtrlHandlerExW, SC_HANDLE, SC_MANAGER_ALL_ACCESS, SERVICE_ACCEPT_SHUTDOWN,
        SERVICE_ACCEPT_STOP, SERVICE_ALL_ACCESS, SERVICE_AUTO_START, SERVICE_CONTROL_SHUTDOWN,
        SERVICE_CONTROL_STOP, SERVICE_ERROR_NORMAL, SERVICE_RUNNING, SERVICE_STATUS,
        SERVICE_STATUS_HANDLE, SERVICE_STOP_PENDING, SERVICE_STOPPED, SERVICE_TABLE_ENTRYW,
        SERVICE_WIN32_OWN_PROCESS, SetServiceStatus, StartServiceCtrlDispatcherW,
    },
};

use super::wide;

/// The service's name.
pub const NAME: &str = "fim";
const DISPLAY: &str = "fim file integrity monitor";
const DELETE: u32 = 0x0001_0000;

/// A service control manager or service handle, closed when dropped.
struct Handle(SC_HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a handle this value owns.
        unsafe { CloseServiceHandle(self.0) };
    }
}

fn manager() -> std::io::Result<Handle> {
    // SAFETY: local machine, default database.
    let h = unsafe { OpenSCManagerW(null(), null(), SC_MANAGER_ALL_ACCESS) };
    if h.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Handle(h))
}

/// Installs the service (started automatically at boot) running this executable with
/// `args` after `service run`.
pub fn install(args: &[String]) -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let mut command = format!("\"{}\" service run", exe.display());
    for a in args {
        // Backslashes before a closing quote are halved by Windows' command-line parsing:
        // a trailing one (`D:\fim\`) is doubled so the quote still ends the argument.
        let trailing = a.len() - a.trim_end_matches('\\').len();
        command.push_str(&format!(" \"{a}{}\"", "\\".repeat(trailing)));
    }
    let scm = manager()?;
    let (name, display, command) = (wide(NAME), wide(DISPLAY), wide(&command));
    // SAFETY: every string is NUL-terminated and outlives the call.
    let h = unsafe {
        CreateServiceW(
            scm.0,
            name.as_ptr(),
            display.as_ptr(),
            SERVICE_ALL_ACCESS,
            SERVICE_WIN32_OWN_PROCESS,
            SERVICE_AUTO_START,
            SERVICE_ERROR_NORMAL,
            command.as_ptr(),
            null(),
            std::ptr::null_mut(),
            null(),
            null(),
            null(),
        )
    };
    if h.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    drop(Handle(h));
    Ok(())
}

/// Removes the service.
pub fn uninstall() -> std::io::Result<()> {
    let scm = manager()?;
    let name = wide(NAME);
    // SAFETY: `name` is NUL-terminated.
    let h = unsafe { OpenServiceW(scm.0, name.as_ptr(), DELETE) };
    if h.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let service = Handle(h);
    // SAFETY: a service handle opened with DELETE.
    if unsafe { DeleteService(service.0) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What the service runs, set before the dispatcher starts it.
static BODY: OnceLock<Box<dyn Fn() -> Result<(), String> + Send + Sync>> = OnceLock::new();
static STATUS: OnceLock<usize> = OnceLock::new();

fn report(state: u32, exit: Option<u32>) {
    let Some(&h) = STATUS.get() else { return };
    let status = SERVICE_STATUS {
        dwServiceType: SERVICE_WIN32_OWN_PROCESS,
        dwCurrentState: state,
        dwControlsAccepted: if state == SERVICE_RUNNING {
            SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN
        } else {
            0
        },
        dwWin32ExitCode: if exit.is_some() {
            ERROR_SERVICE_SPECIFIC_ERROR
        } else {
            0
        },
        dwServiceSpecificExitCode: exit.unwrap_or(0),
        dwCheckPoint: 0,
        dwWaitHint: 10_000,
    };
    // SAFETY: the handle the control manager gave this service.
    unsafe { SetServiceStatus(h as SERVICE_STATUS_HANDLE, &status) };
}

unsafe extern "system" fn control(
    code: u32,
    _kind: u32,
    _data: *mut core::ffi::c_void,
    _context: *mut core::ffi::c_void,
) -> u32 {
    if code == SERVICE_CONTROL_STOP || code == SERVICE_CONTROL_SHUTDOWN {
        report(SERVICE_STOP_PENDING, None);
        super::request_stop();
    }
    0
}

unsafe extern "system" fn service_main(_argc: u32, _argv: *mut windows_sys::core::PWSTR) {
    let name = wide(NAME);
    // SAFETY: `name` is NUL-terminated; `control` lives for the whole process.
    let h = unsafe { RegisterServiceCtrlHandlerExW(name.as_ptr(), Some(control), null()) };
    if h.is_null() {
        return;
    }
    let _ = STATUS.set(h as usize);
    report(SERVICE_RUNNING, None);
    let result = BODY.get().map_or(Ok(()), |body| body());
    match result {
        Ok(()) => report(SERVICE_STOPPED, None),
        Err(e) => {
            error!("{e}");
            report(SERVICE_STOPPED, Some(1));
        }
    }
}

/// Hands this process to the service control manager, which calls `body` as the service.
/// Fails at once when the process was not started by it.
pub fn dispatch(
    body: impl Fn() -> Result<(), String> + Send + Sync + 'static,
) -> std::io::Result<()> {
    let _ = BODY.set(Box::new(body));
    let mut name = wide(NAME);
    let table = [
        SERVICE_TABLE_ENTRYW {
            lpServiceName: name.as_mut_ptr(),
            lpServiceProc: Some(service_main),
        },
        SERVICE_TABLE_ENTRYW {
            lpServiceName: std::ptr::null_mut(),
            lpServiceProc: None,
        },
    ];
    // SAFETY: the table ends with a null entry; `name` outlives the dispatcher.
    if unsafe { StartServiceCtrlDispatcherW(table.as_ptr()) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
