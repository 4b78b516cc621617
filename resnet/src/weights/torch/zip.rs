//! Zip (stored entries only; torch never compresses): the central directory (zip64
//! included) and the bytes of one entry.

use std::collections::HashMap;

use super::TorchError;

pub(super) fn zip_err(msg: impl Into<String>) -> TorchError {
    TorchError::Zip(msg.into())
}

pub(super) struct ZipEntry {
    method: u16,
    size: u64,
    local_offset: u64,
}

pub(super) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}
pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
}
pub(super) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

/// Returns the zip's central directory as name → entry.
pub(super) fn zip_directory(b: &[u8]) -> Result<HashMap<String, ZipEntry>, TorchError> {
    const EOCD: u32 = 0x0605_4b50;
    let search_from = b.len().saturating_sub(22 + 65_535);
    let eocd = (search_from..=b.len().saturating_sub(22))
        .rev()
        .find(|&i| u32_at(b, i) == Some(EOCD))
        .ok_or_else(|| {
            zip_err("no end-of-central-directory record (not a zip file, or truncated)")
        })?;
    let short = |at| u16_at(b, eocd + at).ok_or_else(|| zip_err("truncated end record"));
    let long = |at| u32_at(b, eocd + at).ok_or_else(|| zip_err("truncated end record"));
    let mut count = u64::from(short(10)?);
    let mut cd_offset = u64::from(long(16)?);
    if count == 0xFFFF || cd_offset == 0xFFFF_FFFF {
        // Zip64: the locator sits just before the classic end record.
        let loc = eocd
            .checked_sub(20)
            .filter(|&l| u32_at(b, l) == Some(0x0706_4b50))
            .ok_or_else(|| zip_err("zip64 end locator missing"))?;
        let rec = u64_at(b, loc + 8).ok_or_else(|| zip_err("zip64 locator truncated"))? as usize;
        if u32_at(b, rec) != Some(0x0606_4b50) {
            return Err(zip_err("zip64 end record missing"));
        }
        count = u64_at(b, rec + 32).ok_or_else(|| zip_err("zip64 end record truncated"))?;
        cd_offset = u64_at(b, rec + 48).ok_or_else(|| zip_err("zip64 end record truncated"))?;
    }
    let mut entries = HashMap::new();
    let mut at = usize::try_from(cd_offset).map_err(|_| zip_err("central directory offset"))?;
    for i in 0..count {
        let bad = || {
            zip_err(format!(
                "central directory entry {i} at byte {at} is truncated"
            ))
        };
        if u32_at(b, at) != Some(0x0201_4b50) {
            return Err(zip_err(format!(
                "bad central directory signature at byte {at}"
            )));
        }
        let method = u16_at(b, at + 10).ok_or_else(bad)?;
        let mut size = u64::from(u32_at(b, at + 20).ok_or_else(bad)?);
        let mut usize_ = u64::from(u32_at(b, at + 24).ok_or_else(bad)?);
        let name_len = usize::from(u16_at(b, at + 28).ok_or_else(bad)?);
        let extra_len = usize::from(u16_at(b, at + 30).ok_or_else(bad)?);
        let comment_len = usize::from(u16_at(b, at + 32).ok_or_else(bad)?);
        let mut local_offset = u64::from(u32_at(b, at + 42).ok_or_else(bad)?);
        let name = b.get(at + 46..at + 46 + name_len).ok_or_else(bad)?;
        let name = String::from_utf8_lossy(name).into_owned();
        // Zip64 extended information: only the fields that overflowed are present.
        let extra = b
            .get(at + 46 + name_len..at + 46 + name_len + extra_len)
            .ok_or_else(bad)?;
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = u16_at(extra, e).unwrap_or(0);
            let len = usize::from(u16_at(extra, e + 2).unwrap_or(0));
            if id == 0x0001 {
                let mut f = e + 4;
                for field in [&mut usize_, &mut size, &mut local_offset] {
                    if *field == 0xFFFF_FFFF {
                        *field = u64_at(extra, f).ok_or_else(bad)?;
                        f += 8;
                    }
                }
            }
            e += 4 + len;
        }
        let _ = usize_;
        entries.insert(
            name,
            ZipEntry {
                method,
                size,
                local_offset,
            },
        );
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(entries)
}

pub(super) fn zip_data<'a>(b: &'a [u8], name: &str, e: &ZipEntry) -> Result<&'a [u8], TorchError> {
    if e.method != 0 {
        return Err(zip_err(format!(
            "entry {name} is compressed (method {}); torch.save writes stored entries only",
            e.method
        )));
    }
    let at = usize::try_from(e.local_offset).map_err(|_| zip_err("offset overflow"))?;
    if u32_at(b, at) != Some(0x0403_4b50) {
        return Err(zip_err(format!("bad local header for {name} at byte {at}")));
    }
    let bad = || zip_err(format!("local header of {name} truncated"));
    let n = usize::from(u16_at(b, at + 26).ok_or_else(bad)?);
    let x = usize::from(u16_at(b, at + 28).ok_or_else(bad)?);
    let start = at + 30 + n + x;
    let end = usize::try_from(e.size)
        .ok()
        .and_then(|s| start.checked_add(s))
        .ok_or_else(bad)?;
    b.get(start..end).ok_or_else(|| {
        zip_err(format!(
            "entry {name} runs past the end of the file ({end} > {} bytes): truncated download?",
            b.len()
        ))
    })
}
