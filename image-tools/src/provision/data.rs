//! The data directory as the description's `data_files`: every regular file under it, as
//! UTF-8 text with its permission bits, sorted by path. Symbolic links, special files,
//! names or contents that are not UTF-8, names the description does not allow, too many
//! files and too many bytes are refused, naming the file. Directories are not recorded:
//! the agent creates those a file needs (so an empty directory is not carried), and
//! ownership is not carried either (the files belong to root on the machine).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::PackError;
use crate::disk::write::io_err;
use flipslot_format::provision::{
    valid_relative_path, DataFile, MAX_DATA_FILES, MAX_MODE, MAX_PROVISION_LEN,
};

/// Reads every regular file under `dir` into [`DataFile`]s, sorted by path.
pub fn collect_data_files(dir: &Path) -> Result<Vec<DataFile>, PackError> {
    let mut files = Vec::new();
    let mut total = 0usize;
    walk(dir, "", &mut files, &mut total)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn refuse<T>(path: &Path, reason: impl Into<String>) -> Result<T, PackError> {
    Err(PackError::DataFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    })
}

/// Adds the files under `dir` (whose path relative to the data directory is `rel`).
fn walk(
    dir: &Path,
    rel: &str,
    files: &mut Vec<DataFile>,
    total: &mut usize,
) -> Result<(), PackError> {
    let mut entries: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        entries.push(entry.map_err(io_err("read directory", dir))?.path());
    }
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return refuse(&path, "the name is not UTF-8");
        };
        let rel_path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            return refuse(
                &path,
                "is a symbolic link; the description carries regular files only",
            );
        }
        if kind.is_dir() {
            walk(&path, &rel_path, files, total)?;
            continue;
        }
        if !kind.is_file() {
            return refuse(
                &path,
                "is not a regular file (a FIFO, socket or device); the description carries \
                 regular files only",
            );
        }
        if !valid_relative_path(&rel_path) {
            return refuse(
                &path,
                format!(
                    "path {rel_path:?} must be components of A-Z a-z 0-9 . _ - (at most 255 \
                     bytes each, 1024 in all)"
                ),
            );
        }
        if files.len() == MAX_DATA_FILES {
            return refuse(
                &path,
                format!("the data directory holds more than {MAX_DATA_FILES} files"),
            );
        }
        let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        *total = total.saturating_add(len);
        if *total > MAX_PROVISION_LEN {
            return refuse(
                &path,
                format!(
                    "the data files add up to more than {MAX_PROVISION_LEN} bytes, and the whole \
                     description must fit in 1 MiB"
                ),
            );
        }
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        let Ok(contents) = String::from_utf8(bytes) else {
            return refuse(
                &path,
                "is not UTF-8 text; the description carries text files only",
            );
        };
        files.push(DataFile {
            path: rel_path,
            mode: meta.permissions().mode() & MAX_MODE,
            contents,
        });
    }
    Ok(())
}
