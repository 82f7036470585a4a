//! Every file and folder the program writes, written so that nothing the user had is
//! lost and nothing half-written is left.
//!
//! The guarantee, for files ([`write_file`]) and report folders ([`StagedDir`]):
//!
//! - A run that fails (full disk, closed pipe, refused input) or is interrupted by
//!   SIGINT, SIGTERM or SIGHUP leaves the previous file or folder at the output path
//!   intact and no temporary behind: the content goes to a temporary named
//!   `.NAME.polyattn-tmp-PID` beside the target, which is renamed into place only when
//!   complete and removed on every error path (and by the binary's signal handler,
//!   through [`remove_live_temporaries`]).
//! - The temporary is created with `create_new` (`O_EXCL`): never opened through a
//!   link or file already at that name (one there, left by a dead run whose PID this
//!   process reuses, or planted, is unlinked first, never written through).
//! - After SIGKILL (which no process can intercept) the temporary stays, recognisably
//!   polyattn's by its name; the next run writing into that folder removes every such
//!   temporary whose process (the PID in its name) is gone. Only names of exactly that
//!   form match: a leading `.`, then `NAME.polyattn-tmp-` and a PID of ASCII digits
//!   only, ending the name (a user's `.notes.polyattn-tmp-v2` or
//!   `x.polyattn-tmp-12.bak` is never touched).
//! - An output path that names an input of the same run (same device and inode, after
//!   following links), or that exists and is not a regular file (a device, a FIFO,
//!   a folder where a file is expected), is refused with [`Error::Output`] before any
//!   work starts ([`check_output`]). Overwriting an earlier output is the normal case.
//!
//! A report is complete or untouched: its files are written into a staged sibling
//! folder; only when every file is written are they renamed into the target (the
//! staged folder itself when the target does not exist). Other files in the target
//! folder are never touched.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The marker every temporary's name carries, before the PID.
const TMP_MARK: &str = ".polyattn-tmp-";

/// Temporaries this process has created and not yet renamed or removed.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn register(p: &Path) {
    if let Ok(mut l) = LIVE.lock() {
        l.push(p.to_path_buf());
    }
}

fn unregister(p: &Path) {
    if let Ok(mut l) = LIVE.lock() {
        l.retain(|q| q != p);
    }
}

/// Removes every temporary this process still holds (files and staged folders): the
/// binary's SIGINT/SIGTERM/SIGHUP handler calls it before exiting.
pub fn remove_live_temporaries() {
    let paths = match LIVE.lock() {
        Ok(mut l) => std::mem::take(&mut *l),
        Err(_) => return,
    };
    for p in paths {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// The folder that holds `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The temporary beside `path` for this process.
fn temporary_for(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(path).join(format!(".{name}{TMP_MARK}{what}{}", std::process::id()))
}

/// Whether process `pid` exists (on Linux, by /proc; elsewhere assumed alive, so that
/// nothing another run may still be writing is ever removed).
fn process_alive(pid: u32) -> bool {
    let proc_root = Path::new("/proc");
    if !proc_root.join("self").exists() {
        return true;
    }
    proc_root.join(pid.to_string()).exists()
}

/// The PID in `name` when it has exactly the form of a temporary polyattn creates
/// ([`temporary_for`]): `.NAME.polyattn-tmp-PID`, PID one or more ASCII digits ending
/// the name.
fn temporary_pid(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let pos = name.rfind(TMP_MARK)?;
    let digits = &name[pos + TMP_MARK.len()..];
    if pos == 0 || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Removes, in `dir`, the temporaries left by polyattn runs that were killed
/// (their PID no longer exists). Best effort: a folder that cannot be listed is left.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temporary_pid(&name) else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let p = e.path();
        // Not following links: a link is removed, never what it points to.
        let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        if is_dir {
            let _ = std::fs::remove_dir_all(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Creates `tmp` exclusively (`O_EXCL`: never through an existing file or link). A
/// name already there carries this process's PID but is not one of its live
/// temporaries (a dead run with the same PID, or a planted link): it is unlinked and
/// the creation tried once more.
fn create_exclusive(tmp: &Path) -> std::io::Result<std::fs::File> {
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(tmp)?;
            open()
        }
        r => r,
    }
}

/// Device and inode of `p` after following links, if it exists.
#[cfg(unix)]
fn identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}

/// Whether two paths name one file: the same device and inode when both exist, else
/// the same canonical folder and file name (for outputs not written yet).
pub fn same_path(a: &Path, b: &Path) -> bool {
    if let (Some(x), Some(y)) = (identity(a), identity(b)) {
        return x == y;
    }
    let canon = |p: &Path| {
        let dir = std::fs::canonicalize(parent_of(p)).ok()?;
        Some(dir.join(p.file_name()?))
    };
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

/// Refuses two outputs of one run that name the same file (the second would replace
/// the first).
pub fn check_distinct_outputs(a: &Path, b: &Path) -> Result<()> {
    if same_path(a, b) {
        return Err(Error::Output {
            path: b.to_path_buf(),
            reason: format!(
                "it is the same file as the other output {}; give two paths",
                a.display()
            ),
        });
    }
    Ok(())
}

/// Refuses an output path that is one of `inputs` (the same file, compared by device
/// and inode after following links) or that exists and is not a regular file. `-`
/// and `/dev/stdout` are not accepted: outputs are files (they are written to a
/// temporary and renamed, which a stream cannot be).
pub fn check_output(output: &Path, inputs: &[&Path]) -> Result<()> {
    let refuse = |reason: String| Error::Output {
        path: output.to_path_buf(),
        reason,
    };
    if let Ok(meta) = std::fs::metadata(output) {
        if !meta.is_file() {
            let kind = if meta.is_dir() {
                "a folder"
            } else {
                "not a regular file (a device, a FIFO or a socket)"
            };
            return Err(refuse(format!(
                "it exists and is {kind}; outputs are regular files, replaced atomically"
            )));
        }
        let id = identity(output);
        for input in inputs {
            if id.is_some() && identity(input) == id {
                return Err(refuse(format!(
                    "it is the same file as the input {}; writing would destroy it",
                    input.display()
                )));
            }
        }
    } else if output.as_os_str() == "-" {
        return Err(refuse(
            "outputs are files; `-` (stdout) is not supported".into(),
        ));
    }
    Ok(())
}

/// Refuses an output folder that exists and is not a folder, or that contains one of
/// `inputs` (replacing the folder would delete it).
pub fn check_output_dir(dir: &Path, inputs: &[&Path]) -> Result<()> {
    let refuse = |reason: String| Error::Output {
        path: dir.to_path_buf(),
        reason,
    };
    if let Ok(meta) = std::fs::metadata(dir) {
        if !meta.is_dir() {
            return Err(refuse(
                "it exists and is not a folder; reports are written as a folder".into(),
            ));
        }
        let Ok(d) = std::fs::canonicalize(dir) else {
            return Ok(());
        };
        for input in inputs {
            if let Ok(i) = std::fs::canonicalize(input) {
                if i.starts_with(&d) {
                    return Err(refuse(format!(
                        "it contains the input {}; the report replaces the whole folder",
                        input.display()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (temporary beside it, synced, renamed); on any
/// failure the previous file at `path` is intact and the temporary is gone.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            return Err(Error::Output {
                path: path.to_path_buf(),
                reason: "it exists and is not a regular file".into(),
            });
        }
    }
    remove_stale_temporaries(parent_of(path));
    let tmp = temporary_for(path, "");
    register(&tmp);
    let result = (|| {
        let mut f = create_exclusive(&tmp).map_err(io_err("write", path))?;
        f.write_all(bytes).map_err(io_err("write", path))?;
        f.sync_all().map_err(io_err("write", path))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io_err("write", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    unregister(&tmp);
    result
}

/// A report folder being written: files go into a staged sibling folder, which
/// [`StagedDir::commit`] puts in place of the target; dropped uncommitted (an error
/// on the way), the staged folder is removed and the target untouched.
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    staged: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Starts a staged folder for `target` (whose parents are created).
    pub fn new(target: &Path) -> Result<Self> {
        if let Ok(meta) = std::fs::metadata(target) {
            if !meta.is_dir() {
                return Err(Error::Output {
                    path: target.to_path_buf(),
                    reason: "it exists and is not a folder".into(),
                });
            }
        }
        let parent = parent_of(target);
        std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        remove_stale_temporaries(parent);
        let staged = temporary_for(target, "");
        if staged.exists() {
            let _ = std::fs::remove_dir_all(&staged);
        }
        register(&staged);
        if let Err(e) = std::fs::create_dir(&staged) {
            unregister(&staged);
            return Err(io_err("create", &staged)(e));
        }
        Ok(Self {
            target: target.to_path_buf(),
            staged,
            committed: false,
        })
    }

    /// The staged folder, for writers that take a path.
    pub fn path(&self) -> &Path {
        &self.staged
    }

    /// Writes one file of the report into the staged folder.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let p = self.staged.join(name);
        // The staged folder is fresh and ours; create_new all the same (a report
        // never writes one name twice).
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .map_err(io_err("write", &p))?;
        f.write_all(bytes).map_err(io_err("write", &p))?;
        f.sync_all().map_err(io_err("write", &p))
    }

    /// Puts the staged folder in place of the target: renamed into place when the
    /// target does not exist; otherwise each staged file is renamed over its
    /// namesake in the target, so that files of the user's in that folder are never
    /// touched (every report file is replaced atomically, the folder as a whole is
    /// not).
    pub fn commit(mut self) -> Result<()> {
        if !self.target.exists() {
            std::fs::rename(&self.staged, &self.target).map_err(io_err("write", &self.target))?;
        } else {
            let entries = std::fs::read_dir(&self.staged).map_err(io_err("read", &self.staged))?;
            for e in entries {
                let e = e.map_err(io_err("read", &self.staged))?;
                let dst = self.target.join(e.file_name());
                std::fs::rename(e.path(), &dst).map_err(io_err("write", &dst))?;
            }
            let _ = std::fs::remove_dir_all(&self.staged);
        }
        self.committed = true;
        unregister(&self.staged);
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staged);
            unregister(&self.staged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("polyattn-out-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn listing(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_replaces_and_leaves_no_temporary() {
        let d = scratch("write");
        let p = d.join("a.bin");
        write_file(&p, b"one").unwrap();
        write_file(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(listing(&d), ["a.bin"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed_live_ones_kept() {
        let d = scratch("stale");
        // PID 0x7fff_fff0 does not exist on Linux (pid_max is at most 2^22).
        let dead = d.join(format!(".a.bin{TMP_MARK}{}", 0x7fff_fff0u32));
        let live = d.join(format!(".a.bin{TMP_MARK}1"));
        let other = d.join("keep.txt");
        for p in [&dead, &live, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        write_file(&d.join("a.bin"), b"y").unwrap();
        assert!(!dead.exists(), "a dead run's temporary is removed");
        assert!(live.exists(), "PID 1 is alive: its temporary stays");
        assert!(other.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Only names polyattn creates are cleaned: a user's file that merely contains
    /// the marker (a non-digit before the PID, a sign, a suffix, no leading dot) stays.
    #[test]
    fn stale_cleanup_matches_only_exact_temporary_names() {
        let d = scratch("names");
        let pid = 0x7fff_fff0u32; // no such process (see above)
        let ours = d.join(format!(".a.bin{TMP_MARK}{pid}"));
        let users = [
            format!(".a.bin{TMP_MARK}v{pid}"),
            format!(".a.bin{TMP_MARK}+{pid}"),
            format!(".a.bin{TMP_MARK}{pid}.bak"),
            format!("a.bin{TMP_MARK}{pid}"),
            format!("{TMP_MARK}{pid}"),
        ];
        std::fs::write(&ours, b"x").unwrap();
        for u in &users {
            std::fs::write(d.join(u), b"mine").unwrap();
        }
        remove_stale_temporaries(&d);
        assert!(!ours.exists());
        for u in &users {
            assert!(d.join(u).exists(), "{u} removed");
        }
        assert_eq!(temporary_pid(&format!("..{}12", &TMP_MARK[1..])), Some(12));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The temporary is created with O_EXCL: a link planted at its name (this PID)
    /// is replaced, never written through (File::create truncated its target).
    #[cfg(unix)]
    #[test]
    fn temporary_is_never_opened_through_a_link() {
        let d = scratch("excl");
        let victim = d.join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        let target = d.join("out.bin");
        std::os::unix::fs::symlink(&victim, temporary_for(&target, "")).unwrap();
        write_file(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(listing(&d), ["out.bin", "victim.txt"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn output_equal_to_input_or_not_regular_is_refused() {
        let d = scratch("same");
        let input = d.join("in.st");
        std::fs::write(&input, b"data").unwrap();
        let e = check_output(&input, &[&input]).unwrap_err();
        assert!(matches!(e, Error::Output { .. }), "{e}");
        // The same file through a second name (a hard link) is still the input.
        let link = d.join("link.st");
        std::fs::hard_link(&input, &link).unwrap();
        assert!(check_output(&link, &[&input]).is_err());
        // A folder, a device.
        assert!(check_output(&d, &[&input]).is_err());
        #[cfg(unix)]
        assert!(check_output(Path::new("/dev/null"), &[&input]).is_err());
        // A fresh path or an earlier output: fine.
        check_output(&d.join("out.st"), &[&input]).unwrap();
        std::fs::write(d.join("out.st"), b"old").unwrap();
        check_output(&d.join("out.st"), &[&input]).unwrap();
        assert_eq!(std::fs::read(&input).unwrap(), b"data");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn staged_folder_is_complete_or_untouched() {
        let d = scratch("staged");
        let target = d.join("report");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("old.md"), b"old run").unwrap();
        {
            // A run that fails half-way: the target keeps the old run's files only.
            let s = StagedDir::new(&target).unwrap();
            s.write("report.json", b"{}").unwrap();
        }
        assert_eq!(listing(&target), ["old.md"]);
        assert_eq!(listing(&d), ["report"]);
        let s = StagedDir::new(&target).unwrap();
        s.write("report.json", b"{}").unwrap();
        s.write("report.md", b"new").unwrap();
        s.commit().unwrap();
        // The user's own file stays; the report's files are added.
        assert_eq!(listing(&target), ["old.md", "report.json", "report.md"]);
        assert_eq!(listing(&d), ["report"]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
