//! Shared by the sandbox test binaries: the environment check (root, runc, a static busybox)
//! and a busybox root filesystem.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

pub const BUSYBOX: &str = "/bin/busybox";

/// Fails the test, loudly, when the environment cannot run containers.
pub fn require_environment() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the sandbox tests need root (mounts and runc); run them as root after `bash scripts/setup.sh`"
    );
    let runc = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("runc"))
                .find(|p| p.is_file())
        })
        .expect("runc is not on PATH: run `bash scripts/setup.sh` (installs runc)");
    let out = Command::new(&runc)
        .arg("--version")
        .output()
        .expect("runc --version");
    assert!(out.status.success(), "runc --version failed");
    let busybox = fs::read(BUSYBOX).unwrap_or_else(|_| {
        panic!("{BUSYBOX} is missing: run `bash scripts/setup.sh` (installs busybox-static)")
    });
    assert!(
        !has_interpreter(&busybox),
        "{BUSYBOX} is dynamically linked: run `bash scripts/setup.sh` (installs busybox-static)"
    );
}

/// Whether a 64-bit little-endian ELF file asks for a program interpreter (is dynamically
/// linked): a `PT_INTERP` program header.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    assert!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "{BUSYBOX} is not a 64-bit ELF file"
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

/// A busybox root filesystem: `/bin` with every applet, and `passwd` and `group` as
/// `/etc/passwd` and `/etc/group`.
pub fn busybox_root(dir: &Path, passwd: &str, group: &str) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            symlink("busybox", link).unwrap();
        }
    }
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/passwd"), passwd).unwrap();
    fs::write(dir.join("etc/group"), group).unwrap();
}
