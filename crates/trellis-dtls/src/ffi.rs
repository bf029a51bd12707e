//! The one OpenSSL call the `openssl` crate does not wrap: `DTLSv1_listen`, which takes a
//! ClientHello whose cookie was already checked and sets the connection up as if the cookie
//! exchange had happened in it (message and record sequence numbers), so that the handshake
//! goes on from the second ClientHello.
#![allow(unsafe_code)]

use std::os::raw::c_int;

use foreign_types::ForeignTypeRef;
use openssl::ssl::SslRef;

/// OpenSSL's `BIO_ADDR`, only ever behind a pointer.
#[repr(C)]
struct BioAddr {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn BIO_ADDR_new() -> *mut BioAddr;
    fn BIO_ADDR_free(addr: *mut BioAddr);
    fn DTLSv1_listen(ssl: *mut openssl_sys::SSL, client: *mut BioAddr) -> c_int;
}

/// Runs `DTLSv1_listen` on `ssl`, whose read side holds the ClientHello. The context must set
/// `COOKIE_EXCHANGE` and a cookie check that accepts (the endpoint checked the cookie).
/// Returns whether OpenSSL accepted the ClientHello.
pub(crate) fn listen(ssl: &SslRef) -> bool {
    // SAFETY: `BIO_ADDR_new` has no preconditions; a null result is handled.
    let addr = unsafe { BIO_ADDR_new() };
    if addr.is_null() {
        return false;
    }
    // SAFETY: `ssl.as_ptr()` is a live `SSL`, not used by anyone else during the call (its
    // owner holds the lock around it), with its BIOs
    // set (by `SslStream::new`); `addr` is a live `BIO_ADDR` OpenSSL may write the peer into.
    let outcome = unsafe { DTLSv1_listen(ssl.as_ptr(), addr) };
    // SAFETY: `addr` came from `BIO_ADDR_new` and is freed once.
    unsafe { BIO_ADDR_free(addr) };
    outcome == 1
}

/// Sets the MTU OpenSSL sizes its records for (`SSL_set_mtu`); the contexts of this crate
/// set `NO_QUERY_MTU`, so it is used as given.
pub(crate) fn set_mtu(ssl: &SslRef, mtu: usize) {
    let mtu = std::os::raw::c_long::try_from(mtu).unwrap_or(std::os::raw::c_long::MAX);
    // SAFETY: `ssl.as_ptr()` is a live `SSL`, not used by anyone else during the call (its
    // owner holds the lock around it); `SSL_set_mtu` only stores the number.
    unsafe {
        openssl_sys::SSL_set_mtu(ssl.as_ptr(), mtu);
    }
}

/// Asks the C allocator to give the free memory inside its heaps back to the system
/// (glibc's `malloc_trim`). OpenSSL allocates there whatever Rust's global allocator is, and
/// glibc keeps what a burst of associations freed unless asked.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn release_free_memory() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> c_int;
    }
    // SAFETY: `malloc_trim` has no preconditions and is thread-safe.
    unsafe {
        malloc_trim(0);
    }
}

/// Other allocators return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_free_memory() {}
