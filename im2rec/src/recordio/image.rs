//! The image record payload: a 24-byte IRHeader (`struct IRHeader { u32 flag; f32
//! label; u64 id; u64 id2; }`, little-endian, no padding), then `flag` float32 labels
//! when `flag > 0`, then the encoded image.

use super::RecordIoError;

/// Bytes in an IRHeader.
pub const IR_HEADER_LEN: usize = 24;

/// MXNet's `IRHeader` (`_IR_FORMAT = 'IfQQ'`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct IrHeader {
    /// 0: one label, in `label`. N > 0: N float32 labels follow the header.
    pub flag: u32,
    /// The label when `flag == 0`. When `flag > 0` Python writes 0.0 here and
    /// im2rec.cc the first label; readers should ignore it then.
    pub label: f32,
    /// The image id (im2rec: the `.lst` index).
    pub id: u64,
    /// The high half of a 128-bit id; 0 in practice.
    pub id2: u64,
}

impl IrHeader {
    /// The 24 header bytes.
    pub fn to_bytes(&self) -> [u8; IR_HEADER_LEN] {
        let mut out = [0u8; IR_HEADER_LEN];
        out[0..4].copy_from_slice(&self.flag.to_le_bytes());
        out[4..8].copy_from_slice(&self.label.to_le_bytes());
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
        out[16..24].copy_from_slice(&self.id2.to_le_bytes());
        out
    }

    /// Decodes the first 24 bytes of `payload`.
    pub fn from_bytes(payload: &[u8]) -> Result<Self, RecordIoError> {
        let Some(bytes) = payload.get(..IR_HEADER_LEN) else {
            return Err(RecordIoError::ImageRecordTooShort {
                length: payload.len(),
            });
        };
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | (u64::from(u32_at(i + 4)) << 32);
        Ok(IrHeader {
            flag: u32_at(0),
            label: f32::from_bits(u32_at(4)),
            id: u64_at(8),
            id2: u64_at(16),
        })
    }
}

/// A decoded image record, borrowing the image bytes from the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord<'a> {
    /// The header as stored.
    pub header: IrHeader,
    /// The labels: the `flag` floats after the header when `flag > 0`, otherwise
    /// `vec![header.label]`.
    pub labels: Vec<f32>,
    /// The encoded image (or whatever content follows the labels).
    pub image: &'a [u8],
}

/// Builds an image record payload the way `mx.recordio.pack` does.
///
/// `multi == false`: `flag = 0`, `label = labels[0]` (0.0 when `labels` is empty).
/// `multi == true`: Python's list form: `flag = labels.len()`, header `label = 0.0`,
/// the labels follow as little-endian float32 (a one-element list gives `flag = 1`).
/// `id2` is always 0.
///
/// # Panics
/// If `multi` and there are more than `u32::MAX` labels.
pub fn pack_image_record(id: u64, labels: &[f32], multi: bool, image: &[u8]) -> Vec<u8> {
    let header = if multi {
        let flag = u32::try_from(labels.len()).expect("more than u32::MAX labels");
        IrHeader {
            flag,
            label: 0.0,
            id,
            id2: 0,
        }
    } else {
        IrHeader {
            flag: 0,
            label: labels.first().copied().unwrap_or(0.0),
            id,
            id2: 0,
        }
    };
    let label_bytes = if multi { labels.len() * 4 } else { 0 };
    let mut out = Vec::with_capacity(IR_HEADER_LEN + label_bytes + image.len());
    out.extend_from_slice(&header.to_bytes());
    if multi {
        for label in labels {
            out.extend_from_slice(&label.to_le_bytes());
        }
    }
    out.extend_from_slice(image);
    out
}

/// Splits an image record payload into header, labels and image bytes
/// (`mx.recordio.unpack`). Fails if the payload is shorter than 24 bytes or the
/// `flag` labels run past its end.
pub fn unpack_image_record(payload: &[u8]) -> Result<ImageRecord<'_>, RecordIoError> {
    let header = IrHeader::from_bytes(payload)?;
    if header.flag == 0 {
        return Ok(ImageRecord {
            header,
            labels: vec![header.label],
            image: &payload[IR_HEADER_LEN..],
        });
    }
    let image_start = IR_HEADER_LEN as u64 + 4 * u64::from(header.flag);
    if image_start > payload.len() as u64 {
        return Err(RecordIoError::LabelsPastEnd {
            flag: header.flag,
            length: payload.len(),
        });
    }
    // image_start <= payload.len(), so it fits in usize.
    let image_start = image_start as usize;
    let labels = payload[IR_HEADER_LEN..image_start]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(ImageRecord {
        header,
        labels,
        image: &payload[image_start..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hex with a space every 4 bytes, except the two 8-byte ids kept whole.
    fn hex(bytes: &[u8]) -> String {
        let groups = [4, 4, 8, 8];
        let mut out = Vec::new();
        let mut rest = bytes;
        let mut i = 0;
        while !rest.is_empty() {
            let n = groups.get(i).copied().unwrap_or(4).min(rest.len());
            let (group, tail) = rest.split_at(n);
            out.push(group.iter().map(|b| format!("{b:02x}")).collect::<String>());
            rest = tail;
            i += 1;
        }
        out.join(" ")
    }

    #[test]
    fn reference_header_bytes_1_7() {
        let single = pack_image_record(7, &[3.0], false, b"");
        assert_eq!(
            hex(&single),
            "00000000 00004040 0700000000000000 0000000000000000"
        );
        let multi = pack_image_record(7, &[1.0, 0.0, 2.0], true, b"IMG");
        assert_eq!(
            hex(&multi),
            "03000000 00000000 0700000000000000 0000000000000000 0000803f 00000000 00000040 494d47"
        );
        let back = unpack_image_record(&multi).unwrap();
        assert_eq!(
            back.header,
            IrHeader {
                flag: 3,
                label: 0.0,
                id: 7,
                id2: 0
            }
        );
        assert_eq!(back.labels, [1.0, 0.0, 2.0]);
        assert_eq!(back.image, b"IMG");
    }

    #[test]
    fn single_label_forms() {
        let one_bytes = pack_image_record(9, &[2.5], false, b"x");
        let one = unpack_image_record(&one_bytes).unwrap();
        assert_eq!(
            (one.header.flag, one.labels.as_slice(), one.image),
            (0, &[2.5f32][..], &b"x"[..])
        );
        // A one-element list in multi mode gives flag = 1, like Python.
        let listed_bytes = pack_image_record(9, &[2.5], true, b"x");
        let listed = unpack_image_record(&listed_bytes).unwrap();
        assert_eq!((listed.header.flag, listed.header.label), (1, 0.0));
        assert_eq!(listed.labels, [2.5]);
        // No labels: label 0.0 / flag 0.
        assert_eq!(
            pack_image_record(1, &[], false, b""),
            pack_image_record(1, &[], true, b"")
        );
    }

    #[test]
    fn cxx_style_header_label_is_kept_but_labels_come_from_the_floats() {
        // im2rec.cc writes the first label into header.label when flag > 0.
        let mut payload = IrHeader {
            flag: 2,
            label: 5.0,
            id: 3,
            id2: 1,
        }
        .to_bytes()
        .to_vec();
        payload.extend_from_slice(&5.0f32.to_le_bytes());
        payload.extend_from_slice(&6.0f32.to_le_bytes());
        let rec = unpack_image_record(&payload).unwrap();
        assert_eq!((rec.header.label, rec.header.id2), (5.0, 1));
        assert_eq!(rec.labels, [5.0, 6.0]);
        assert!(rec.image.is_empty());
    }

    #[test]
    fn short_or_inconsistent_records_are_errors() {
        for len in 0..IR_HEADER_LEN {
            assert!(matches!(
                unpack_image_record(&vec![0; len]),
                Err(RecordIoError::ImageRecordTooShort { length }) if length == len
            ));
        }
        let mut payload = pack_image_record(1, &[1.0, 2.0], true, b"");
        payload.pop();
        assert!(matches!(
            unpack_image_record(&payload),
            Err(RecordIoError::LabelsPastEnd {
                flag: 2,
                length: 31
            })
        ));
        let mut huge = IrHeader::default().to_bytes();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            unpack_image_record(&huge),
            Err(RecordIoError::LabelsPastEnd {
                flag: u32::MAX,
                length: 24
            })
        ));
    }
}
