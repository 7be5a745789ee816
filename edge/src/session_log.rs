//! The session log: an append-only record of every result, so a clinic can review a day of
//! screening later.
//!
//! Durability: each record is one JSON line, written with a single `write` and then flushed to
//! disk with `fdatasync` before the next result is logged. A power cut loses at most the record
//! being written, which shows up as a last line without its newline and is skipped by readers. When
//! `session.jsonl` passes the size limit it is renamed to `session-<unix time>.jsonl` and a new file
//! is started. Optionally each frame is saved as `frames/<seq>-<unix ms>.png`.

use anyhow::{Context, Result};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// One logged result.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord<'a> {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub time_ms: u128,
    /// Frame sequence number.
    pub seq: u32,
    /// Predicted class name.
    pub class: &'a str,
    /// Probability per class, in label order.
    pub probabilities: &'a [f32],
    /// Shown as "uncertain — refer".
    pub uncertain: bool,
    /// Centre-zoom box in frame pixels `[x0, y0, x1, y1]`.
    pub zoom_box: Option<[u16; 4]>,
    /// Why the frame gate refused the frame (then `class` is "no eye in view", no probabilities).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_eye: Option<&'a str>,
    /// Last byte in → result out, milliseconds.
    pub latency_ms: f32,
    /// Model bundle name.
    pub model: &'a str,
}

/// Append-only, size-rotated JSON-lines log.
#[derive(Debug)]
pub struct SessionLog {
    dir: PathBuf,
    file: File,
    bytes: u64,
    max_bytes: u64,
    frames: bool,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

impl SessionLog {
    /// Opens (appending to) `dir/session.jsonl`.
    pub fn open(dir: &Path, max_bytes: u64, frames: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create log folder {}", dir.display()))?;
        if frames {
            std::fs::create_dir_all(dir.join("frames")).context("cannot create the frames folder")?;
        }
        let path = dir.join("session.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        sync_dir(dir)?;
        let mut bytes = file.metadata().map_or(0, |m| m.len());
        // A power cut mid-write can leave half a line; end it so the next record starts clean
        // (a reader skips the one unparsable line).
        if bytes > 0 && !ends_with_newline(&path)? {
            let mut file = &file;
            file.write_all(b"\n").context("cannot repair the session log")?;
            file.sync_data().context("cannot flush the session log to disk")?;
            bytes += 1;
        }
        Ok(SessionLog { dir: dir.to_path_buf(), file, bytes, max_bytes: max_bytes.max(1024), frames })
    }

    /// The log's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends any record (one JSON line) durably; rotates first if the file is full.
    pub fn append_line(&mut self, record: &impl Serialize) -> Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        if self.bytes > 0 && self.bytes + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line).context("cannot write the session log")?;
        self.file.sync_data().context("cannot flush the session log to disk")?;
        self.bytes += line.len() as u64;
        Ok(())
    }

    /// Appends a frame's record durably (and its picture, if frames are kept).
    pub fn append(&mut self, record: &LogRecord<'_>, frame: Option<(&[u8], u32, u32)>) -> Result<()> {
        self.append_line(record)?;
        if let (true, Some((pixels, w, h))) = (self.frames, frame) {
            let path = self.dir.join("frames").join(format!("{:06}-{}.png", record.seq, record.time_ms));
            image::save_buffer(&path, pixels, w, h, image::ExtendedColorType::L8)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let current = self.dir.join("session.jsonl");
        let mut archived = self.dir.join(format!("session-{}.jsonl", now_ms()));
        let mut n = 1;
        while archived.exists() {
            archived = self.dir.join(format!("session-{}-{n}.jsonl", now_ms()));
            n += 1;
        }
        std::fs::rename(&current, &archived).context("cannot rotate the session log")?;
        self.file =
            OpenOptions::new().create(true).append(true).open(&current).context("cannot start a new session log")?;
        // The rename and the new file are directory entries: without this a power cut could lose
        // the new file, records and all, although each record was fsynced.
        sync_dir(&self.dir)?;
        self.bytes = 0;
        Ok(())
    }
}

/// Writes `bytes` as `path` so that after a power cut the file is either whole or absent: into a
/// temporary file beside it, flushed, renamed over `path`, and the folder flushed.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        anyhow::bail!("{} is not a file path", path.display());
    };
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    sync_dir(dir)
}

/// Flushes the folder's entries (created and renamed files) to disk.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot flush the log folder {} to disk", dir.display()))
}

fn ends_with_newline(path: &Path) -> Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}
