//! `USER` resolution through the image's own `/etc/passwd` and `/etc/group`.
//!
//! The rules are runc's (`libcontainer/user.GetExecUser`), which Docker and BuildKit both use:
//! - `""` is root (uid 0), with the primary group and home from passwd when root is listed;
//! - `name` or `uid` is looked up in passwd; a numeric uid that is not listed is allowed and gets
//!   gid 0; a name that is not listed is an error naming the file;
//! - `user:group` takes the group from the group file by name or gid; a numeric gid that is not
//!   listed is allowed, a name that is not listed is an error;
//! - supplementary groups are the groups that list the user as a member, and only in the implicit
//!   form (no `:group`);
//! - `HOME` is the user's passwd home, else `/`.

use std::path::{Path, PathBuf};

use super::error::Error;
use super::path::resolve_in_root;

/// The passwd file, as a path inside the container.
pub const PASSWD_PATH: &str = "/etc/passwd";
/// The group file, as a path inside the container.
pub const GROUP_PATH: &str = "/etc/group";

/// Ids are limited to the signed 32-bit range, as runc limits them.
const MAX_ID: u32 = i32::MAX as u32;

/// A resolved `USER`: the ids the process runs with and its default home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary group ids, from the group file's member lists.
    pub additional_gids: Vec<u32>,
    /// The home directory from passwd, else `/`; used as `HOME` when the environment has none.
    pub home: String,
}

/// Resolves a `USER` value (`name`, `uid`, `name:group`, `uid:gid`, ...) against the passwd and
/// group files of the root filesystem at `rootfs`.
///
/// Missing files are treated as empty, so numeric ids always resolve.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<User, Error> {
    let passwd = read_optional(rootfs, PASSWD_PATH)?;
    let group = read_optional(rootfs, GROUP_PATH)?;
    resolve(spec, passwd.as_deref(), group.as_deref())
}

fn read_optional(rootfs: &Path, path: &str) -> Result<Option<String>, Error> {
    let host =
        resolve_in_root(rootfs, Path::new(path)).map_err(|e| Error::io("resolve", path, e))?;
    match std::fs::read(&host) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(err) if super::path::is_missing(&err) => Ok(None),
        Err(err) => Err(Error::io("read", host, err)),
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Fields of the non-empty, non-comment lines of a colon-separated file.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split(':').collect())
}

fn passwd_entries(text: &str) -> Vec<PasswdEntry<'_>> {
    records(text)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?,
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).copied().unwrap_or(""),
            })
        })
        .collect()
}

fn group_entries(text: &str) -> Vec<GroupEntry<'_>> {
    records(text)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?,
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_id(spec: &str, text: &str) -> Result<Option<u32>, Error> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(id) if id <= MAX_ID => Ok(Some(id)),
        _ => Err(Error::InvalidUser {
            user: spec.to_string(),
            reason: format!("id {text} is out of range (0 to {MAX_ID})"),
        }),
    }
}

fn resolve(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<User, Error> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, g),
        None => (spec, ""),
    };
    let uid_arg = parse_id(spec, user_arg)?;
    let gid_arg = parse_id(spec, group_arg)?;

    let users = passwd.map(passwd_entries).unwrap_or_default();
    let matched = users.iter().find(|u| match (user_arg, uid_arg) {
        ("", _) => u.uid == 0,
        (_, Some(uid)) => u.uid == uid,
        (name, None) => u.name == name,
    });

    let mut user = User {
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        home: "/".to_string(),
    };
    match (matched, uid_arg) {
        (Some(entry), _) => {
            user.uid = entry.uid;
            user.gid = entry.gid;
            if !entry.home.is_empty() {
                user.home = entry.home.to_string();
            }
        }
        (None, Some(uid)) => user.uid = uid,
        (None, None) if user_arg.is_empty() => {}
        (None, None) => {
            return Err(Error::UnknownUser {
                user: user_arg.to_string(),
                file: PathBuf::from(PASSWD_PATH),
            });
        }
    }

    let groups = group.map(group_entries).unwrap_or_default();
    if !group_arg.is_empty() {
        let found = groups.iter().find(|g| match gid_arg {
            Some(gid) => g.gid == gid,
            None => g.name == group_arg,
        });
        user.gid = match (found, gid_arg) {
            (Some(entry), _) => entry.gid,
            (None, Some(gid)) => gid,
            (None, None) => {
                return Err(Error::UnknownGroup {
                    group: group_arg.to_string(),
                    file: PathBuf::from(GROUP_PATH),
                });
            }
        };
    } else if let Some(entry) = matched {
        user.additional_gids = groups
            .iter()
            .filter(|g| g.members.contains(&entry.name))
            .map(|g| g.gid)
            .collect();
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
# comment line
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/sh
nohome:x:1001:1001::
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:root,alice
alice:x:1000:
dev:x:2000:alice,bob
";

    fn user(spec: &str) -> Result<User, Error> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_is_root_with_memberships() {
        let u = user("").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(u.additional_gids, vec![10]);
    }

    #[test]
    fn name_and_uid_forms() {
        let u = user("alice").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/alice"));
        assert_eq!(u.additional_gids, vec![10, 2000]);
        assert_eq!(user("1000").unwrap(), u);
        let u = user("nohome").unwrap();
        assert_eq!(u.home, "/");
    }

    #[test]
    fn explicit_group_drops_supplementary_groups() {
        let u = user("alice:dev").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 2000));
        assert!(u.additional_gids.is_empty());
        let u = user("1000:10").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        let u = user("alice:4242").unwrap();
        assert_eq!(u.gid, 4242);
    }

    #[test]
    fn unknown_numeric_ids_are_allowed() {
        let u = user("4321").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4321, 0, "/"));
        assert!(u.additional_gids.is_empty());
        let u = user("4321:8765").unwrap();
        assert_eq!((u.uid, u.gid), (4321, 8765));
    }

    #[test]
    fn unknown_names_name_the_file() {
        let err = user("mallory").unwrap_err();
        assert!(matches!(err, Error::UnknownUser { ref user, .. } if user == "mallory"));
        assert_eq!(
            err.to_string(),
            "unable to find user mallory: no matching entries in /etc/passwd"
        );
        let err = user("alice:nogroup").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find group nogroup: no matching entries in /etc/group"
        );
    }

    #[test]
    fn missing_files() {
        let u = resolve("", None, None).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/"));
        let u = resolve("12:34", None, None).unwrap();
        assert_eq!((u.uid, u.gid), (12, 34));
        assert!(matches!(
            resolve("root", None, None),
            Err(Error::UnknownUser { .. })
        ));
    }

    #[test]
    fn ids_out_of_range() {
        assert!(matches!(user("4294967295"), Err(Error::InvalidUser { .. })));
        assert!(matches!(
            user("99999999999999"),
            Err(Error::InvalidUser { .. })
        ));
    }
}
