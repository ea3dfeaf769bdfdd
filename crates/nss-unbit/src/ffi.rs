//! The `hosts` entry points glibc looks up in `libnss_unbit.so.2` (`_nss_unbit_*`), with the
//! signatures of glibc's `nss/nss_files/files-hosts.c` and `nss_module.h`:
//!
//! * `gethostbyname4_r`: `getaddrinfo` with `AF_UNSPEC` (most programs, `getent ahosts`);
//! * `gethostbyname3_r`, `gethostbyname2_r`, `gethostbyname_r`: `getaddrinfo` for one family,
//!   `gethostbyname*` (`getent hosts`, which asks `AF_INET6` first, then `AF_INET`);
//! * `gethostbyaddr_r`: reverse lookups (`getent hosts 10.0.0.3`, `getnameinfo`).
//!
//! Everything returned lives in the caller's buffer; a buffer too small gets `TRYAGAIN` with
//! `ERANGE`, and glibc calls again with a larger one.

use crate::name;
use libc::{c_char, c_int, c_void, hostent, size_t, socklen_t, AF_INET};
use std::ffi::CStr;
use std::mem::{align_of, size_of};
use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::null_mut;

/// glibc's `enum nss_status`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NssStatus {
    TryAgain = -2,
    Unavail = -1,
    NotFound = 0,
    Success = 1,
}

// <netdb.h> h_errno values (not in the libc crate).
const NETDB_INTERNAL: c_int = -1;
const HOST_NOT_FOUND: c_int = 1;
const NO_RECOVERY: c_int = 3;
const NO_DATA: c_int = 4;

/// glibc's `struct gaih_addrtuple` (`<nss.h>`), the list `gethostbyname4_r` returns.
#[repr(C)]
pub struct GaihAddrtuple {
    pub next: *mut GaihAddrtuple,
    pub name: *mut c_char,
    pub family: c_int,
    pub addr: [u32; 4],
    pub scopeid: u32,
}

/// What a lookup ended with, before it is told to glibc through `errno`/`h_errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Found,
    /// Not a name (or address) of ours: the next source in nsswitch.conf may know it.
    NotOurs,
    /// A container's name, asked for a family it has no address in (IPv6).
    NoAddressOfFamily,
    /// The caller's buffer cannot hold the answer.
    BufferTooSmall,
    /// A panic was caught, or glibc passed a null pointer it must not.
    Internal,
}

fn report(outcome: Outcome, errnop: *mut c_int, h_errnop: *mut c_int) -> NssStatus {
    let (status, errno, h_errno) = match outcome {
        Outcome::Found => return NssStatus::Success,
        Outcome::NotOurs => (NssStatus::NotFound, libc::ENOENT, HOST_NOT_FOUND),
        Outcome::NoAddressOfFamily => (NssStatus::NotFound, libc::ENOENT, NO_DATA),
        Outcome::BufferTooSmall => (NssStatus::TryAgain, libc::ERANGE, NETDB_INTERNAL),
        Outcome::Internal => (NssStatus::Unavail, libc::EINVAL, NO_RECOVERY),
    };
    if !errnop.is_null() {
        // SAFETY: non-null, and glibc passes the address of the calling thread's errno (or a
        // local int) for exactly this write.
        unsafe { *errnop = errno };
    }
    if !h_errnop.is_null() {
        // SAFETY: as errnop: a valid int for the status of this call.
        unsafe { *h_errnop = h_errno };
    }
    status
}

/// Runs a lookup with panics caught: unwinding into glibc's C frames is undefined behaviour.
fn guarded(errnop: *mut c_int, h_errnop: *mut c_int, lookup: impl FnOnce() -> Outcome) -> NssStatus {
    let outcome = catch_unwind(AssertUnwindSafe(lookup)).unwrap_or(Outcome::Internal);
    report(outcome, errnop, h_errnop)
}

/// The caller's buffer, handed out front to back with the alignment each piece needs.
struct Arena {
    base: *mut u8,
    len: usize,
    used: usize,
}

impl Arena {
    fn new(buffer: *mut c_char, len: size_t) -> Arena {
        Arena { base: buffer.cast(), len, used: 0 }
    }

    /// Room for `size` bytes aligned to `align` (a power of two), or `None` when the buffer
    /// is too small.
    fn reserve(&mut self, size: usize, align: usize) -> Option<*mut u8> {
        let addr = (self.base as usize).checked_add(self.used)?;
        let start = self.used.checked_add(addr.wrapping_neg() & (align - 1))?;
        let end = start.checked_add(size)?;
        if end > self.len {
            return None;
        }
        self.used = end;
        // SAFETY: start <= end <= len, so the offset stays inside the caller's buffer.
        Some(unsafe { self.base.add(start) })
    }

    fn put<T>(&mut self, value: T) -> Option<*mut T> {
        let p = self.reserve(size_of::<T>(), align_of::<T>())?.cast::<T>();
        // SAFETY: reserve gave size_of::<T>() bytes inside the buffer, aligned for T, that
        // nothing else refers to yet.
        unsafe { p.write(value) };
        Some(p)
    }

    /// `bytes` and a NUL, as a C string in the buffer.
    fn put_str(&mut self, bytes: &[u8]) -> Option<*mut c_char> {
        let p = self.reserve(bytes.len() + 1, 1)?;
        // SAFETY: reserve gave bytes.len() + 1 bytes inside the buffer; `bytes` is a Rust
        // slice elsewhere, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            *p.add(bytes.len()) = 0;
        }
        Some(p.cast())
    }
}

/// `hostent` for `uid`'s name with its one IPv4 address, strings and arrays in `arena`.
fn fill_hostent(uid: u32, result: *mut hostent, arena: &mut Arena) -> Outcome {
    if result.is_null() {
        return Outcome::Internal;
    }
    let mut text = [0u8; name::MAX_NAME];
    let n = name::format(uid, &mut text);
    let built = (|| {
        let h_name = arena.put_str(&text[..n])?;
        let addr = arena.put(container_spec::ip_of(uid).octets())?;
        let aliases = arena.put([null_mut::<c_char>()])?;
        let addrs = arena.put([addr.cast::<c_char>(), null_mut()])?;
        Some(hostent { h_name, h_aliases: aliases.cast(), h_addrtype: AF_INET, h_length: 4, h_addr_list: addrs.cast() })
    })();
    match built {
        Some(h) => {
            // SAFETY: result is non-null and glibc passes a hostent of the caller's to fill.
            unsafe { result.write(h) };
            Outcome::Found
        }
        None => Outcome::BufferTooSmall,
    }
}

/// The name glibc asks about, as bytes (without the NUL).
fn name_bytes<'a>(name: *const c_char) -> Option<&'a [u8]> {
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null, and glibc passes a NUL-terminated name that outlives the call.
    Some(unsafe { CStr::from_ptr(name) }.to_bytes())
}

fn by_name(
    name: *const c_char,
    af: c_int,
    result: *mut hostent,
    arena: &mut Arena,
    canonp: *mut *mut c_char,
) -> Outcome {
    let Some(bytes) = name_bytes(name) else { return Outcome::Internal };
    let Some(uid) = name::uid_of_name(bytes) else { return Outcome::NotOurs };
    if af != AF_INET {
        return Outcome::NoAddressOfFamily;
    }
    let outcome = fill_hostent(uid, result, arena);
    if outcome == Outcome::Found && !canonp.is_null() {
        // SAFETY: non-null: glibc's slot for the canonical name; result was just filled, and
        // its h_name lives in the caller's buffer as glibc requires.
        unsafe { *canonp = (*result).h_name };
    }
    outcome
}

/// # Safety
/// glibc's contract: `name` a C string, `result` a writable hostent, `buffer` `buflen`
/// writable bytes, `errnop`/`h_errnop` writable ints, `ttlp` and `canonp` null or writable.
#[no_mangle]
pub unsafe extern "C" fn _nss_unbit_gethostbyname3_r(
    name: *const c_char,
    af: c_int,
    result: *mut hostent,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
    ttlp: *mut i32,
    canonp: *mut *mut c_char,
) -> NssStatus {
    guarded(errnop, h_errnop, || {
        let outcome = by_name(name, af, result, &mut Arena::new(buffer, buflen), canonp);
        if outcome == Outcome::Found && !ttlp.is_null() {
            // SAFETY: non-null: glibc's slot for the answer's TTL. 0: computed, never stale,
            // nothing to cache.
            unsafe { *ttlp = 0 };
        }
        outcome
    })
}

/// # Safety
/// As [`_nss_unbit_gethostbyname3_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_unbit_gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    result: *mut hostent,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
) -> NssStatus {
    guarded(errnop, h_errnop, || by_name(name, af, result, &mut Arena::new(buffer, buflen), null_mut()))
}

/// # Safety
/// As [`_nss_unbit_gethostbyname3_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_unbit_gethostbyname_r(
    name: *const c_char,
    result: *mut hostent,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
) -> NssStatus {
    guarded(errnop, h_errnop, || by_name(name, AF_INET, result, &mut Arena::new(buffer, buflen), null_mut()))
}

/// `getaddrinfo(AF_UNSPEC)`: one IPv4 tuple, in the buffer, the list's head put in `*pat`
/// (what glibc's own modules and systemd's do; glibc then walks the list from `*pat`).
///
/// # Safety
/// glibc's contract: `name` a C string, `pat` a writable pointer slot, `buffer` `buflen`
/// writable bytes, `errnop`/`h_errnop` writable ints, `ttlp` null or writable.
#[no_mangle]
pub unsafe extern "C" fn _nss_unbit_gethostbyname4_r(
    name: *const c_char,
    pat: *mut *mut GaihAddrtuple,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
    ttlp: *mut i32,
) -> NssStatus {
    guarded(errnop, h_errnop, || {
        let Some(bytes) = name_bytes(name) else { return Outcome::Internal };
        let Some(uid) = name::uid_of_name(bytes) else { return Outcome::NotOurs };
        if pat.is_null() {
            return Outcome::Internal;
        }
        let mut text = [0u8; name::MAX_NAME];
        let n = name::format(uid, &mut text);
        let mut arena = Arena::new(buffer, buflen);
        let tuple = arena.put_str(&text[..n]).and_then(|h_name| {
            // In network byte order, as in struct in_addr.
            let ip = u32::from_ne_bytes(container_spec::ip_of(uid).octets());
            arena.put(GaihAddrtuple {
                next: null_mut(),
                name: h_name,
                family: AF_INET,
                addr: [ip, 0, 0, 0],
                scopeid: 0,
            })
        });
        let Some(tuple) = tuple else { return Outcome::BufferTooSmall };
        // SAFETY: pat is non-null: glibc's slot for the list's head.
        unsafe { *pat = tuple };
        if !ttlp.is_null() {
            // SAFETY: non-null: glibc's slot for the TTL.
            unsafe { *ttlp = 0 };
        }
        Outcome::Found
    })
}

/// # Safety
/// glibc's contract: `addr` `len` readable bytes, `result` a writable hostent, `buffer`
/// `buflen` writable bytes, `errnop`/`h_errnop` writable ints.
#[no_mangle]
pub unsafe extern "C" fn _nss_unbit_gethostbyaddr_r(
    addr: *const c_void,
    len: socklen_t,
    af: c_int,
    result: *mut hostent,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
) -> NssStatus {
    guarded(errnop, h_errnop, || {
        if af != AF_INET || len != 4 {
            return Outcome::NotOurs;
        }
        if addr.is_null() {
            return Outcome::Internal;
        }
        let mut octets = [0u8; 4];
        // SAFETY: non-null and len == 4: glibc passes a struct in_addr of 4 readable bytes.
        unsafe { std::ptr::copy_nonoverlapping(addr.cast::<u8>(), octets.as_mut_ptr(), 4) };
        match name::uid_of_addr(Ipv4Addr::from(octets)) {
            Some(uid) => fill_hostent(uid, result, &mut Arena::new(buffer, buflen)),
            None => Outcome::NotOurs,
        }
    })
}

#[cfg(test)]
mod tests {
    //! The entry points called as glibc calls them, with buffers of every size.
    use super::*;
    use std::mem::MaybeUninit;

    fn lookup2(name: &str, af: c_int, buflen: usize) -> (NssStatus, c_int, c_int, Option<(String, Vec<Ipv4Addr>)>) {
        let cname = std::ffi::CString::new(name).unwrap();
        let mut h = MaybeUninit::<hostent>::zeroed();
        let mut buf = vec![0 as c_char; buflen];
        let (mut errno, mut h_errno) = (0, 0);
        // SAFETY: every pointer is to a live local of the right size.
        let status = unsafe {
            _nss_unbit_gethostbyname2_r(
                cname.as_ptr(),
                af,
                h.as_mut_ptr(),
                buf.as_mut_ptr(),
                buflen,
                &mut errno,
                &mut h_errno,
            )
        };
        let answer = (status == NssStatus::Success).then(|| {
            // SAFETY: Success: the hostent and everything it points to were written.
            unsafe { read_hostent(h.assume_init_ref()) }
        });
        (status, errno, h_errno, answer)
    }

    unsafe fn read_hostent(h: &hostent) -> (String, Vec<Ipv4Addr>) {
        assert_eq!((h.h_addrtype, h.h_length), (AF_INET, 4));
        assert!((*h.h_aliases).is_null());
        let name = CStr::from_ptr(h.h_name).to_str().unwrap().to_string();
        let mut addrs = Vec::new();
        let mut p = h.h_addr_list;
        while !(*p).is_null() {
            let mut o = [0u8; 4];
            std::ptr::copy_nonoverlapping((*p).cast::<u8>(), o.as_mut_ptr(), 4);
            addrs.push(Ipv4Addr::from(o));
            p = p.add(1);
        }
        (name, addrs)
    }

    fn reverse(addr: Ipv4Addr) -> (NssStatus, c_int, Option<String>) {
        let octets = addr.octets();
        let mut h = MaybeUninit::<hostent>::zeroed();
        let mut buf = [0 as c_char; 128];
        let (mut errno, mut h_errno) = (0, 0);
        // SAFETY: every pointer is to a live local of the right size.
        let status = unsafe {
            _nss_unbit_gethostbyaddr_r(
                octets.as_ptr().cast(),
                4,
                AF_INET,
                h.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut errno,
                &mut h_errno,
            )
        };
        // SAFETY: Success: the hostent and everything it points to were written.
        let name = (status == NssStatus::Success).then(|| unsafe { read_hostent(h.assume_init_ref()) }.0);
        (status, h_errno, name)
    }

    #[test]
    fn a_container_name_gets_its_address() {
        let (status, _, _, answer) = lookup2("30902.LOCAL.", AF_INET, 1024);
        assert_eq!(status, NssStatus::Success);
        assert_eq!(answer, Some(("30902.local".to_string(), vec![container_spec::ip_of(30902)])));
    }

    #[test]
    fn ipv6_and_other_names_are_not_found() {
        let (s, e, h, a) = lookup2("30902.local", libc::AF_INET6, 1024);
        assert_eq!((s, e, h, a), (NssStatus::NotFound, libc::ENOENT, NO_DATA, None));
        let (s, e, h, a) = lookup2("030902.local", AF_INET, 1024);
        assert_eq!((s, e, h, a), (NssStatus::NotFound, libc::ENOENT, HOST_NOT_FOUND, None));
        assert_eq!(lookup2("example.org", AF_INET, 1024).0, NssStatus::NotFound);
    }

    #[test]
    fn every_buffer_size_either_fits_or_asks_for_more() {
        let mut fitted = false;
        for len in 0..128 {
            let (status, errno, h_errno, answer) = lookup2("16807213.local", AF_INET, len);
            match status {
                NssStatus::Success => {
                    fitted = true;
                    assert_eq!(answer.unwrap().0, "16807213.local");
                }
                NssStatus::TryAgain => {
                    assert!(!fitted, "a larger buffer ({len} bytes) must not fail where a smaller fitted");
                    assert_eq!((errno, h_errno), (libc::ERANGE, NETDB_INTERNAL));
                }
                other => panic!("{len} bytes: {other:?}"),
            }
        }
        assert!(fitted);
    }

    #[test]
    fn getaddrinfo_tuple_and_reverse() {
        let cname = std::ffi::CString::new("30902.local").unwrap();
        let mut buf = [0 as c_char; 128];
        let mut pat: *mut GaihAddrtuple = null_mut();
        let (mut errno, mut h_errno, mut ttl) = (0, 0, -1);
        // SAFETY: live locals of the right sizes.
        let status = unsafe {
            _nss_unbit_gethostbyname4_r(
                cname.as_ptr(),
                &mut pat,
                buf.as_mut_ptr(),
                buf.len(),
                &mut errno,
                &mut h_errno,
                &mut ttl,
            )
        };
        assert_eq!((status, ttl), (NssStatus::Success, 0));
        // SAFETY: Success: *pat points at a tuple in buf.
        let t = unsafe { &*pat };
        assert!(t.next.is_null());
        assert_eq!(t.family, AF_INET);
        assert_eq!(t.addr[0].to_ne_bytes(), container_spec::ip_of(30902).octets());
        // SAFETY: the tuple's name is a C string in buf.
        assert_eq!(unsafe { CStr::from_ptr(t.name) }.to_str().unwrap(), "30902.local");

        assert_eq!(reverse(container_spec::ip_of(30902)), (NssStatus::Success, 0, Some("30902.local".into())));
        assert_eq!(reverse(Ipv4Addr::new(10, 0, 0, 1)), (NssStatus::NotFound, HOST_NOT_FOUND, None));
        assert_eq!(reverse(Ipv4Addr::new(192, 0, 2, 3)), (NssStatus::NotFound, HOST_NOT_FOUND, None));
    }
}
