//! File helpers every backend needs to hand a job's files over.

use std::path::{Path, PathBuf};

/// Copies a file, or a folder with everything in it: folders, regular files
/// and links (as links). Anything else (a FIFO, a socket, a device) is skipped
/// and named in `skipped`: reading a FIFO would block until something writes.
/// `from` itself may be a link (followed); links inside it stay links.
pub fn copy_tree(from: &Path, to: &Path, skipped: &mut Vec<PathBuf>) -> std::io::Result<()> {
    copy_entry(from, to, skipped, true)
}

fn copy_entry(
    from: &Path,
    to: &Path,
    skipped: &mut Vec<PathBuf>,
    top: bool,
) -> std::io::Result<()> {
    let ty = if top {
        std::fs::metadata(from)?.file_type()
    } else {
        std::fs::symlink_metadata(from)?.file_type()
    };
    if ty.is_symlink() {
        let link = std::fs::read_link(from)?;
        let _ = std::fs::remove_file(to);
        return std::os::unix::fs::symlink(link, to);
    }
    if ty.is_file() {
        if let Some(d) = to.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::copy(from, to)?;
        return Ok(());
    }
    if !ty.is_dir() {
        skipped.push(from.to_path_buf());
        return Ok(());
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        copy_entry(&entry.path(), &to.join(entry.file_name()), skipped, false)?;
    }
    Ok(())
}
