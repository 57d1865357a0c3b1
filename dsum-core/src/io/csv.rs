//! A small, friendly reader for the competition's CSV tables (`fname,dialogue,summary,...`):
//! a UTF-8 file with a header row, read whole through the `csv` crate, columns looked up
//! by name. Every error names the file, the line and the problem (missing column, bytes
//! that are not UTF-8, a broken quote, an empty file, a row of the wrong width, a
//! duplicate key), because these files are hand-edited and exported from spreadsheets.

use std::collections::HashMap;
use std::path::Path;
use std::string::{String, ToString};
use std::vec::Vec;

use crate::error::{Error, Result};

/// A CSV file with a header row, held in memory: every field's text in one buffer.
#[derive(Debug, Clone)]
pub struct Table {
    name: String,
    headers: Vec<String>,
    /// All data fields, row after row, concatenated.
    text: String,
    /// `ends[r * width + c]`: end of row r's field c in `text`.
    ends: Vec<usize>,
    /// The line each row starts on.
    lines: Vec<u64>,
}

/// One data row: its fields (as many as the header has) and the line it starts on.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    table: &'a Table,
    index: usize,
}

impl<'a> Row<'a> {
    /// The 1-based line of the file the row starts on (a quoted field may span lines).
    pub fn line(&self) -> u64 {
        self.table.lines[self.index]
    }

    /// Field `col` (an index from [`Table::column`]); `""` past the last column.
    pub fn get(&self, col: usize) -> &'a str {
        let w = self.table.headers.len();
        if col >= w {
            return "";
        }
        let k = self.index * w + col;
        let start = if k == 0 { 0 } else { self.table.ends[k - 1] };
        self.table.text.get(start..self.table.ends[k]).unwrap_or("")
    }
}

impl Table {
    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<Table> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::io(&name, e))?;
        Table::parse(&name, &bytes)
    }

    /// Parses CSV `bytes`; `name` is what errors call the file.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Table> {
        let err = |message: String| Error::data(name, message);
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes); // Excel's BOM
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(err("empty file: expected a header row".into()));
        }
        check_quotes(bytes).map_err(err)?;

        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(bytes);
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| err(csv_message(&e)))?
            .iter()
            .map(String::from)
            .collect();
        let mut seen = HashMap::new();
        for (i, h) in headers.iter().enumerate() {
            if let Some(first) = seen.insert(h.as_str(), i) {
                return Err(err(format!(
                    "line 1: column `{h}` appears twice in the header (columns {} and {})",
                    first + 1,
                    i + 1
                )));
            }
        }
        let mut text = String::with_capacity(bytes.len());
        let (mut ends, mut lines) = (Vec::new(), Vec::new());
        let mut record = ::csv::StringRecord::new();
        while reader
            .read_record(&mut record)
            .map_err(|e| err(csv_message(&e)))?
        {
            lines.push(record.position().map(|p| p.line()).unwrap_or(0));
            for field in record.iter() {
                text.push_str(field);
                ends.push(text.len());
            }
        }
        Ok(Table {
            name: name.into(),
            headers,
            text,
            ends,
            lines,
        })
    }

    /// What errors call the file (its path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The header row.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the file has only a header.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The data rows, in file order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> + '_ {
        (0..self.len()).map(move |index| Row { table: self, index })
    }

    /// The index of column `name`, if the header has it.
    pub fn find_column(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    /// The index of a required column; the error lists the columns the file does have.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.find_column(name).ok_or_else(|| {
            Error::data(
                &self.name,
                format!(
                    "missing column `{name}` (the header has: {})",
                    self.headers.join(", ")
                ),
            )
        })
    }

    /// Fails if two rows share a value in column `col`, naming the values and their lines.
    pub fn check_unique(&self, col: usize) -> Result<()> {
        let mut first: HashMap<&str, u64> = HashMap::new();
        let mut dups = Vec::new();
        for row in self.rows() {
            if let Some(&l) = first.get(row.get(col)) {
                dups.push(format!("`{}` (lines {l} and {})", row.get(col), row.line()));
            } else {
                first.insert(row.get(col), row.line());
            }
        }
        if dups.is_empty() {
            return Ok(());
        }
        let column = self.headers.get(col).map(String::as_str).unwrap_or("?");
        Err(Error::data(
            &self.name,
            format!("duplicate {column}: {}", list_some(&dups, 10)),
        ))
    }
}

/// `items` joined with ", ", at most `max` of them and a count of the rest.
pub fn list_some(items: &[String], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(&format!(" and {} more", items.len() - max));
    }
    s
}

/// 1-based line of byte offset `at`.
fn line_of(bytes: &[u8], at: usize) -> u64 {
    bytes[..at.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
        + 1
}

fn csv_message(e: &::csv::Error) -> String {
    match e.kind() {
        ::csv::ErrorKind::UnequalLengths { pos, expected_len, len } => format!(
            "line {}: {len} fields, but the header has {expected_len} (a comma inside an unquoted field?)",
            pos.as_ref().map(|p| p.line()).unwrap_or(0)
        ),
        ::csv::ErrorKind::Utf8 { pos, err } => format!(
            "line {}: bytes that are not UTF-8 (field {}); save the file as UTF-8",
            pos.as_ref().map(|p| p.line()).unwrap_or(0),
            err.field() + 1
        ),
        _ => e.to_string(),
    }
}

/// Finds the quoting mistakes the `csv` crate would silently repair into wrong data: text
/// after a closing quote (`"a"b`, usually an undoubled quote inside a quoted field) and a
/// quoted field that never closes (which would swallow the rest of the file). Jumps from
/// quote to quote; a quote opens a field only at the start of one, as in the `csv` crate.
fn check_quotes(b: &[u8]) -> core::result::Result<(), String> {
    let next_quote = |from: usize| {
        b.get(from..)?
            .iter()
            .position(|&c| c == b'"')
            .map(|k| from + k)
    };
    let mut i = 0;
    while let Some(q) = next_quote(i) {
        let field_start = q == 0 || matches!(b[q - 1], b',' | b'\n' | b'\r');
        if !field_start {
            i = q + 1; // a bare quote inside an unquoted field is kept as text
            continue;
        }
        let mut j = q + 1;
        loop {
            let Some(k) = next_quote(j) else {
                return Err(format!(
                    "line {}: quoted field is never closed",
                    line_of(b, q)
                ));
            };
            match b.get(k + 1) {
                Some(b'"') => j = k + 2, // "" is an escaped quote
                None | Some(b',' | b'\n' | b'\r') => {
                    i = k + 1;
                    break;
                }
                Some(_) => {
                    return Err(format!(
                        "line {}: text after the closing quote of a field opened on line {} \
                         (a quote inside a quoted field must be doubled: \"\")",
                        line_of(b, k),
                        line_of(b, q)
                    ))
                }
            }
        }
    }
    Ok(())
}
