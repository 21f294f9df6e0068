//! libvirt's C API, loaded at run time (`libvirt.so.0`, `libvirt-qemu.so.0`), so nothing
//! links against libvirt and the source needs it only where it is used.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

/// `virConnectPtr`.
pub(super) type Connect = *mut c_void;
/// `virDomainPtr`.
pub(super) type Domain = *mut c_void;
/// `virErrorFunc`.
type ErrorFunc = unsafe extern "C" fn(*mut c_void, *mut c_void);

/// `VIR_UUID_STRING_BUFLEN`.
pub(super) const UUID_STRING_BUFLEN: usize = 37;
/// `VIR_CONNECT_LIST_DOMAINS_ACTIVE`.
pub(super) const LIST_DOMAINS_ACTIVE: c_uint = 1;
/// `VIR_DOMAIN_RUNNING`, `VIR_DOMAIN_PAUSED` (`virDomainState`).
pub(super) const STATE_RUNNING: c_int = 1;
pub(super) const STATE_PAUSED: c_int = 3;

/// The functions used, resolved once per process.
pub(super) struct Api {
    pub connect_open: unsafe extern "C" fn(*const c_char) -> Connect,
    pub connect_close: unsafe extern "C" fn(Connect) -> c_int,
    pub list_all_domains: unsafe extern "C" fn(Connect, *mut *mut Domain, c_uint) -> c_int,
    pub lookup_by_name: unsafe extern "C" fn(Connect, *const c_char) -> Domain,
    pub domain_free: unsafe extern "C" fn(Domain) -> c_int,
    pub domain_get_name: unsafe extern "C" fn(Domain) -> *const c_char,
    pub domain_get_uuid_string: unsafe extern "C" fn(Domain, *mut c_char) -> c_int,
    pub domain_get_state: unsafe extern "C" fn(Domain, *mut c_int, *mut c_int, c_uint) -> c_int,
    pub domain_suspend: unsafe extern "C" fn(Domain) -> c_int,
    pub domain_resume: unsafe extern "C" fn(Domain) -> c_int,
    pub monitor_command:
        unsafe extern "C" fn(Domain, *const c_char, *mut *mut c_char, c_uint) -> c_int,
    last_error_message: unsafe extern "C" fn() -> *const c_char,
    // the libraries stay loaded as long as the function pointers above exist
    _virt: libloading::Library,
    _qemu: libloading::Library,
}

/// Why libvirt's libraries could not be loaded.
#[derive(Debug, Clone)]
pub(super) struct LoadError {
    pub what: String,
    pub why: String,
}

/// A libvirt error handler that says nothing: errors are taken from
/// `virGetLastErrorMessage` and returned, not printed to stderr by libvirt.
unsafe extern "C" fn quiet(_user: *mut c_void, _error: *mut c_void) {}

impl Api {
    /// The loaded API (loaded on first use).
    pub(super) fn get() -> Result<&'static Api, LoadError> {
        static API: OnceLock<Result<Api, LoadError>> = OnceLock::new();
        API.get_or_init(Api::load).as_ref().map_err(Clone::clone)
    }

    fn load() -> Result<Api, LoadError> {
        let open = |name: &str| {
            // SAFETY: loading libvirt runs its library constructors, which only set up
            // its own global state (no code of ours runs).
            unsafe { libloading::Library::new(name) }.map_err(|e| LoadError {
                what: name.into(),
                why: e.to_string(),
            })
        };
        let virt = open("libvirt.so.0")?;
        let qemu = open("libvirt-qemu.so.0")?;
        macro_rules! sym {
            ($lib:expr, $name:literal) => {
                // SAFETY: the type is the function's C prototype in libvirt's headers
                // (libvirt-host.h, libvirt-domain.h, virterror.h, libvirt-qemu.h); the
                // pointer is used only while the library is loaded (it is kept in Api).
                *unsafe { $lib.get(concat!($name, "\0").as_bytes()) }.map_err(|e| LoadError {
                    what: format!("{} in libvirt", $name),
                    why: e.to_string(),
                })?
            };
        }
        let initialize: unsafe extern "C" fn() -> c_int = sym!(virt, "virInitialize");
        let set_error_func: unsafe extern "C" fn(*mut c_void, Option<ErrorFunc>) =
            sym!(virt, "virSetErrorFunc");
        let api = Api {
            connect_open: sym!(virt, "virConnectOpen"),
            connect_close: sym!(virt, "virConnectClose"),
            list_all_domains: sym!(virt, "virConnectListAllDomains"),
            lookup_by_name: sym!(virt, "virDomainLookupByName"),
            domain_free: sym!(virt, "virDomainFree"),
            domain_get_name: sym!(virt, "virDomainGetName"),
            domain_get_uuid_string: sym!(virt, "virDomainGetUUIDString"),
            domain_get_state: sym!(virt, "virDomainGetState"),
            domain_suspend: sym!(virt, "virDomainSuspend"),
            domain_resume: sym!(virt, "virDomainResume"),
            monitor_command: sym!(qemu, "virDomainQemuMonitorCommand"),
            last_error_message: sym!(virt, "virGetLastErrorMessage"),
            _virt: virt,
            _qemu: qemu,
        };
        // SAFETY: virInitialize takes no arguments and is safe to call more than once;
        // virSetErrorFunc stores a pointer to `quiet`, a function that lives as long as
        // the program and ignores its arguments.
        unsafe {
            if initialize() != 0 {
                return Err(LoadError {
                    what: "virInitialize".into(),
                    why: api.last_error(),
                });
            }
            set_error_func(std::ptr::null_mut(), Some(quiet));
        }
        Ok(api)
    }

    /// This thread's last libvirt error (`virGetLastErrorMessage`).
    pub(super) fn last_error(&self) -> String {
        // SAFETY: virGetLastErrorMessage returns a pointer to a NUL-terminated string
        // owned by libvirt's thread-local error (or a static "no error"), valid until the
        // next libvirt call on this thread; it is copied at once.
        unsafe { string(self.last_error_message_ptr()) }.unwrap_or_else(|| "unknown error".into())
    }

    fn last_error_message_ptr(&self) -> *const c_char {
        // SAFETY: no arguments; see last_error.
        unsafe { (self.last_error_message)() }
    }
}

/// Copy a C string libvirt returned (`None` for NULL).
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
pub(super) unsafe fn string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}
