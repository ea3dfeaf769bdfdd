//! `libnss_unbit.so.2`: the glibc NSS module behind `hosts: files unbit dns` in a container's
//! `/etc/nsswitch.conf`. It answers `<uid>.local` with the container's 10.x address (what the
//! API shows as `ip`, [`container_spec::ip_of`]) and a container's address with its name. The
//! answer is computed: no file, no socket, no thread, no allocation, no global state. That a
//! name resolves says nothing about reachability: the node's table lets a container reach
//! another only when both linked (docs/networking.md).
//!
//! This crate holds `unsafe` (outside the project's usual three places) because an NSS module
//! is a C ABI by nature: glibc hands it raw pointers to a caller's buffer and result structs.
//! The `unsafe` is confined to [`ffi`]: turning those pointers into slices and writing the
//! answer into the buffer, every block with its `// SAFETY:` reason. Every entry point runs its
//! body under `catch_unwind`, so no panic unwinds into glibc's C frames.

pub mod ffi;
pub mod name;
