//! Opening a JSON-lines file for appending so that a crash never corrupts it: the file sink and
//! the dead-letter file both use [`open_append`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Opens `path` for appending, creating it and its folders.
///
/// - A non-empty file that does not end in `\n` has a torn last line (a crash or a full disk in
///   the middle of a write): it is truncated back to its last `\n`, with a warning, so the next
///   line is never glued onto the fragment. The fragment is a record that was never
///   acknowledged, so it is delivered again.
/// - Folders and the file created here are made durable by fsyncing their parent folders, so a
///   power cut cannot lose a file whose contents were fsynced.
pub fn open_append(path: &Path) -> io::Result<File> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_dir_durable(dir)?;
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    if !existed {
        sync_dir(Some(dir))?;
    }
    let len = file.metadata()?.len();
    let keep = complete_len(&mut file, len)?;
    if keep < len {
        file.set_len(keep)?;
        file.sync_data()?;
        tracing::warn!(
            path = %path.display(),
            bytes = len - keep,
            "truncated a torn last line (the file did not end in a newline)"
        );
    }
    Ok(file)
}

/// Creates `dir` and its missing parents, and fsyncs the parent of each folder it created, so a
/// power cut cannot lose the folder of a file whose contents were fsynced (the file sink, the
/// dead-letter file and the file offset store use it).
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    let missing = missing_ancestors(dir);
    if !missing.is_empty() {
        std::fs::create_dir_all(dir)?;
        // Deepest first: each new folder's entry lives in its parent.
        for d in &missing {
            sync_dir(d.parent().filter(|p| !p.as_os_str().is_empty()))?;
        }
    }
    Ok(())
}

/// The length of `file` up to and including its last `\n` (0 when it has none), reading
/// backwards from `len` in blocks.
fn complete_len(file: &mut File, len: u64) -> io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        // `end - start` is at most BLOCK, the buffer's length.
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// `dir` and its ancestors that do not exist yet, deepest first.
fn missing_ancestors(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .take_while(|a| !a.exists())
        .map(Path::to_path_buf)
        .collect()
}

/// Fsyncs a folder so the entries created in it survive a power cut (`None`: the working
/// directory).
fn sync_dir(dir: Option<&Path>) -> io::Result<()> {
    File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_with(content: &[u8]) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, content).expect("write");
        drop(open_append(&path).expect("open"));
        let after = std::fs::read(&path).expect("read");
        (dir, path, after)
    }

    #[test]
    fn a_torn_last_line_is_truncated_on_open() {
        let (_d, _, after) = open_with(b"{\"seq\":1}\n{\"seq\":2}\n{\"partial");
        assert_eq!(after, b"{\"seq\":1}\n{\"seq\":2}\n");
    }

    #[test]
    fn a_file_that_is_only_a_fragment_becomes_empty() {
        let (_d, _, after) = open_with(&vec![b'x'; 200_000]);
        assert!(after.is_empty());
    }

    #[test]
    fn a_fragment_longer_than_a_block_is_cut_at_the_right_newline() {
        let mut content = b"{\"seq\":1}\n".to_vec();
        content.extend(vec![b'y'; 150_000]);
        let (_d, _, after) = open_with(&content);
        assert_eq!(after, b"{\"seq\":1}\n");
    }

    #[test]
    fn complete_and_empty_files_are_left_alone() {
        let (_d, _, after) = open_with(b"a\nb\n");
        assert_eq!(after, b"a\nb\n");
        let (_d, _, after) = open_with(b"");
        assert!(after.is_empty());
    }

    #[test]
    fn folders_are_created_and_appends_go_to_the_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a/b/out.jsonl");
        let mut f = open_append(&path).expect("open");
        std::io::Write::write_all(&mut f, b"one\n").expect("write");
        drop(f);
        let mut f = open_append(&path).expect("reopen");
        std::io::Write::write_all(&mut f, b"two\n").expect("write");
        drop(f);
        assert_eq!(std::fs::read(&path).expect("read"), b"one\ntwo\n");
    }
}
