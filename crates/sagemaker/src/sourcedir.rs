//! `sourceDir` as the `sourcedir.tar.gz` SageMaker's framework containers
//! unpack. The archive is reproducible (sorted entries, zero mtimes and owners),
//! so its SHA-256 names it in S3 and an unchanged folder is uploaded once.

use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};
use switchyard_training::TrainingJob;

/// A packed source folder.
pub struct SourceArchive {
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of `bytes`.
    pub sha256: String,
    pub files: usize,
}

/// Packs every file under `dir` (following file symlinks; skipping
/// `__pycache__` and `.git`).
pub fn pack(dir: &Path) -> Result<SourceArchive, String> {
    pack_files(dir, switchyard_training::source_files(dir))
}

/// Packs a job's code as its contract ships it
/// ([`switchyard_training::code_files`]).
pub fn pack_code(job: &TrainingJob, dir: &Path) -> Result<SourceArchive, String> {
    pack_files(dir, switchyard_training::code_files(job, dir))
}

fn pack_files(
    dir: &Path,
    files: std::io::Result<Vec<switchyard_training::SourceFile>>,
) -> Result<SourceArchive, String> {
    let ctx = |e: std::io::Error| format!("cannot pack sourceDir {}: {e}", dir.display());
    let files = files.map_err(ctx)?;
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    tar.mode(tar::HeaderMode::Deterministic);
    for f in &files {
        let data = std::fs::read(&f.path).map_err(ctx)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        let executable = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&f.path)
                .map_err(ctx)?
                .permissions()
                .mode()
                & 0o111
                != 0
        };
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, &f.rel, data.as_slice())
            .map_err(ctx)?;
    }
    let gz = tar.into_inner().map_err(ctx)?;
    let mut bytes = gz.finish().map_err(ctx)?;
    bytes.flush().map_err(ctx)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(SourceArchive {
        bytes,
        sha256,
        files: files.len(),
    })
}

/// Unpacks a `.tar.gz` (SageMaker's model.tar.gz) into `dest`, refusing entries
/// that would land outside it.
pub fn unpack(bytes: &[u8], dest: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut n = 0;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar.gz archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("corrupt archive: {e}"))?;
        // `unpack_in` refuses `..` and absolute paths.
        let inside = entry
            .unpack_in(dest)
            .map_err(|e| format!("cannot unpack into {}: {e}", dest.display()))?;
        if !inside {
            return Err(format!(
                "the archive has an entry outside its folder ({})",
                entry
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ));
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_folder_same_hash_and_round_trip() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("train.py"), "print('hi')\n").unwrap();
        std::fs::create_dir_all(d.path().join("pkg/__pycache__")).unwrap();
        std::fs::write(d.path().join("pkg/util.py"), "X = 1\n").unwrap();
        std::fs::write(d.path().join("pkg/__pycache__/util.pyc"), "junk").unwrap();
        let a = pack(d.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(d.path().join("pkg/__pycache__/util.pyc"), "other junk").unwrap();
        let b = pack(d.path()).unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.files, 2);
        let out = tempfile::tempdir().unwrap();
        assert_eq!(unpack(&a.bytes, out.path()).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(out.path().join("pkg/util.py")).unwrap(),
            "X = 1\n"
        );
        std::fs::write(d.path().join("train.py"), "print('changed')\n").unwrap();
        assert_ne!(pack(d.path()).unwrap().sha256, a.sha256);
    }
}
