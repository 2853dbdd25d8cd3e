//! Keeping the extension's code mapped for the life of the process.
//!
//! The registered VFS and the auto-extension hook are function pointers into this
//! library, so it must never be unmapped. `sqlite3_load_extension` would `dlclose` it
//! when the loading connection closes unless the entry point returns
//! `SQLITE_OK_LOAD_PERMANENTLY`; but an entry point registered with
//! `sqlite3_auto_extension` (a C program that links the static library) must return
//! plain `SQLITE_OK`, since SQLite treats any other value there as a failure: it stops
//! running later auto-extensions and leaves "automatic extension loading failed" as the
//! connection's error. Pinning the shared object ourselves lets one entry point return
//! `SQLITE_OK` in both cases.

use std::os::raw::c_void;

/// Where this library's code lives, as far as unloading goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Residence {
    /// Linked into the main program (static library): nothing can unload it.
    MainProgram,
    /// A shared object that now holds a reference we never release (`RTLD_NODELETE`).
    Pinned,
    /// Neither could be established; only `SQLITE_OK_LOAD_PERMANENTLY` keeps it loaded.
    Unknown,
}

/// Makes sure the object holding this code stays mapped, and says how.
pub(crate) fn pin_this_library() -> Residence {
    let here = pin_this_library as *const c_void;
    let Some(ours) = object_of(here) else {
        return Residence::Unknown;
    };
    // SAFETY: getauxval has no preconditions; AT_PHDR is the address of the main
    // program's program headers, which lie inside the main program's mapping.
    let main_phdr = unsafe { libc::getauxval(libc::AT_PHDR) } as *const c_void;
    if !main_phdr.is_null() && object_of(main_phdr).is_some_and(|main| main.dli_fbase == ours.dli_fbase) {
        return Residence::MainProgram;
    }
    if ours.dli_fname.is_null() {
        return Residence::Unknown;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the dynamic loader. With
    // RTLD_NOLOAD this only takes another reference to the already loaded object (and
    // marks it NODELETE); the handle is deliberately never closed.
    let handle = unsafe {
        libc::dlopen(
            ours.dli_fname,
            libc::RTLD_LAZY | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
        )
    };
    if handle.is_null() {
        Residence::Unknown
    } else {
        Residence::Pinned
    }
}

/// The loaded object containing `address`, if the dynamic loader knows it.
fn object_of(address: *const c_void) -> Option<libc::Dl_info> {
    // SAFETY: dladdr only reads `address` as a number and fills `info`.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        (libc::dladdr(address, &mut info) != 0).then_some(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_linked_into_a_test_binary_is_part_of_the_main_program() {
        // The test harness links this crate statically, as a C program linking
        // liblitestream_vfs.a does.
        assert_eq!(pin_this_library(), Residence::MainProgram);
    }
}
