//! TensorBoard event files written by hand, so training curves open in TensorBoard (and
//! W&B's TensorBoard import, which the seed used) without a protobuf dependency: TFRecord
//! framing (`u64 len`, masked CRC32C of it, the bytes, masked CRC32C of them) around a
//! minimal `Event` protobuf: `wall_time`, `step`, `file_version` / `source_metadata`, and a
//! `Summary` of scalar `simple_value`s. Field numbers follow tensorboard's `event.proto`
//! and `summary.proto` (proto3: zero scalars are left out, oneof members are not).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// CRC32C (Castagnoli), bitwise; event records are small.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// TFRecord's masked CRC: rotate right by 15 and add a constant.
pub fn masked_crc(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// One TFRecord around `payload`.
pub fn record(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc(payload).to_le_bytes());
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    varint(out, ((field << 3) | 2) as u64);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn event_head(wall_time: f64, step: i64) -> Vec<u8> {
    let mut ev = Vec::new();
    if wall_time != 0.0 {
        ev.push(0x09); // field 1, fixed64
        ev.extend_from_slice(&wall_time.to_le_bytes());
    }
    if step != 0 {
        ev.push(0x10); // field 2, varint (int64: negative as 10-byte two's complement)
        varint(&mut ev, step as u64);
    }
    ev
}

/// `Event{wall_time, file_version: "brain.Event:2", source_metadata{writer}}`, the first
/// record of every events file.
pub fn file_version_event(wall_time: f64, writer: &str) -> Vec<u8> {
    let mut ev = event_head(wall_time, 0);
    bytes_field(&mut ev, 3, b"brain.Event:2");
    let mut meta = Vec::new();
    bytes_field(&mut meta, 1, writer.as_bytes());
    bytes_field(&mut ev, 10, &meta);
    ev
}

/// `Event{wall_time, step, summary{value{tag, simple_value}}}`.
pub fn scalar_event(wall_time: f64, step: i64, tag: &str, value: f32) -> Vec<u8> {
    let mut v = Vec::new();
    bytes_field(&mut v, 1, tag.as_bytes());
    v.push(0x15); // field 2, fixed32
    v.extend_from_slice(&value.to_le_bytes());
    let mut summary = Vec::new();
    bytes_field(&mut summary, 1, &v);
    let mut ev = event_head(wall_time, step);
    bytes_field(&mut ev, 5, &summary);
    ev
}

/// An events file in `dir`, appended record by record (each record is one write, flushed,
/// so TensorBoard can read it while training runs and a crash loses at most the last one).
pub struct EventWriter {
    path: PathBuf,
    file: std::fs::File,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl EventWriter {
    /// A new `events.out.tfevents.{secs}.{host}.{pid}` file in `dir` (created if needed);
    /// a resumed run starts a new file beside the old ones, which TensorBoard merges.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        let wall = now();
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "dsum".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            wall as u64,
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        let mut w = EventWriter { path, file };
        w.write_event(&file_version_event(wall, "dsum"))?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_event(&mut self, event: &[u8]) -> Result<()> {
        self.file
            .write_all(&record(event))
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(self.path.display().to_string(), e))
    }

    pub fn scalar(&mut self, step: u64, tag: &str, value: f64) -> Result<()> {
        self.write_event(&scalar_event(now(), step as i64, tag, value as f32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_values() {
        // RFC 3720 test vector and the standard check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }
}
