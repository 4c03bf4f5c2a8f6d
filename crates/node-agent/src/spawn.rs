//! Starting a container as a process: in the pod's network namespace, in a
//! mount namespace of its own whose root is a small directory of bind
//! mounts (the system libraries, this project's binary as the image's
//! entrypoint, `/dev`, a `/tmp`, and the container's volume mounts), as the
//! security context's user and groups.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::process::{Child, Command};

use crate::container::{ENTRYPOINT, Launch};

/// Host directories every container sees, read-only, at the same path.
const SYSTEM_DIRS: &[&str] = &["/usr/lib", "/usr/lib64", "/usr/bin", "/etc/ssl"];

/// One mount the child makes before it starts the program.
struct Bind {
    source: CString,
    target: CString,
    read_only: bool,
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("a path with a NUL byte"))
}

/// Creates `target` as a mount point of the same kind as `source`.
fn mount_point(source: &Path, target: &Path) -> io::Result<()> {
    if source.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if !target.exists() {
            File::create(target)?;
        }
        Ok(())
    }
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts `launch` in the network namespace at `netns`, with `root` as the
/// directory its root is built in, `binary` as the image's entrypoint, and
/// its output appended to `log`.
pub fn spawn(launch: &Launch, netns: &Path, root: &Path, binary: &Path, log: &Path) -> io::Result<Child> {
    std::fs::create_dir_all(root)?;
    let mut binds: Vec<(PathBuf, PathBuf, bool)> = Vec::new();
    for dir in SYSTEM_DIRS {
        if Path::new(dir).is_dir() {
            binds.push((dir.into(), root.join(&dir[1..]), true));
        }
    }
    // Merged /usr: /lib and /lib64 are links into it, in the root as on the host.
    for link in ["lib", "lib64", "bin"] {
        let at = root.join(link);
        if std::fs::symlink_metadata(&at).is_err() {
            std::os::unix::fs::symlink(format!("usr/{link}"), &at)?;
        }
    }
    binds.push((binary.into(), root.join(&ENTRYPOINT[1..]), true));
    binds.push(("/dev".into(), root.join("dev"), false));
    for mount in &launch.mounts {
        let target = root.join(mount.target.trim_start_matches('/'));
        binds.push((mount.source.clone(), target, mount.read_only));
    }
    for (source, target, _) in &binds {
        mount_point(source, target)?;
    }
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp)?;

    let binds: Vec<Bind> = binds
        .iter()
        .map(|(source, target, read_only)| {
            Ok(Bind {
                source: c_path(source)?,
                target: c_path(target)?,
                read_only: *read_only,
            })
        })
        .collect::<io::Result<_>>()?;
    let root_c = c_path(root)?;
    let tmp_c = c_path(&tmp)?;
    let slash = CString::new("/").expect("no NUL");
    let tmpfs = CString::new("tmpfs").expect("no NUL");
    let tmpfs_options = CString::new("mode=1777").expect("no NUL");
    let netns = File::open(netns)?;
    let (uid, gid, groups, read_only_root) = (launch.uid, launch.gid, launch.groups.clone(), launch.read_only_root);

    let output = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .kill_on_drop(true);
    // SAFETY: between fork and exec the closure makes only system calls
    // (setns, unshare, mount, chroot, chdir, setgroups, setgid, setuid) on
    // values prepared before the fork; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let null = std::ptr::null::<libc::c_char>();
            check(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                null,
                slash.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                root_c.as_ptr(),
                root_c.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            for bind in &binds {
                check(libc::mount(
                    bind.source.as_ptr(),
                    bind.target.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if bind.read_only {
                    check(libc::mount(
                        null,
                        bind.target.as_ptr(),
                        null,
                        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            check(libc::mount(
                tmpfs.as_ptr(),
                tmp_c.as_ptr(),
                tmpfs.as_ptr(),
                0,
                tmpfs_options.as_ptr().cast(),
            ))?;
            if read_only_root {
                check(libc::mount(
                    null,
                    root_c.as_ptr(),
                    null,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                    std::ptr::null(),
                ))?;
            }
            check(libc::chroot(root_c.as_ptr()))?;
            check(libc::chdir(slash.as_ptr()))?;
            check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
            Ok(())
        });
    }
    command.spawn()
}
