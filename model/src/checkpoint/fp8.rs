//! FP8 e4m3fn block dequantisation (docs/model.md §5.2).
//!
//! Each raw byte is decoded through a 256-entry table built from the bit formula (OCP FP8,
//! `torch.float8_e4m3fn`): `sign = b>>7, e = (b>>3)&0xF, m = b&7`; subnormal `(-1)^s·2^-6·m/8` when
//! `e == 0`, NaN for `e == 15 && m == 7` (0x7F, 0xFF), else `(-1)^s·2^(e-7)·(1+m/8)`. Every value is
//! exact in f32. The weight is then multiplied block-wise by `weight_scale_inv[r / br, c / bc]`
//! in f32, one rounding per element, exactly as `fp8.float() * scale_inv[r//128, c//128]` in PyTorch;
//! the last block row and column may be partial.

use std::sync::OnceLock;

/// The default (and DeepSeek's) quantisation block: 128 × 128.
pub const BLOCK: (usize, usize) = (128, 128);

/// The f32 value of one e4m3fn byte, from the bit formula.
pub fn e4m3_value(byte: u8) -> f32 {
    let sign = if byte & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exponent = i32::from((byte >> 3) & 0x0F);
    let mantissa = f32::from(byte & 0x07);
    match exponent {
        0 => sign * (mantissa / 8.0) * 2f32.powi(-6),
        15 if mantissa == 7.0 => f32::NAN,
        e => sign * (1.0 + mantissa / 8.0) * 2f32.powi(e - 7),
    }
}

/// All 256 e4m3fn values, indexed by the raw byte.
pub fn e4m3_table() -> &'static [f32; 256] {
    static TABLE: OnceLock<[f32; 256]> = OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|b| e4m3_value(b as u8)))
}

/// Shape of the scale grid for a `rows × cols` weight: `[ceil(rows/br), ceil(cols/bc)]`.
pub fn scale_shape(rows: usize, cols: usize, block: (usize, usize)) -> [usize; 2] {
    [rows.div_ceil(block.0), cols.div_ceil(block.1)]
}

/// Dequantises a row-major `rows × cols` e4m3fn weight with its row-major scale grid.
///
/// Returns the f32 weight, or a message when the lengths do not fit the shapes.
pub fn dequantize(
    bytes: &[u8],
    rows: usize,
    cols: usize,
    scales: &[f32],
    block: (usize, usize),
) -> Result<Vec<f32>, String> {
    if block.0 == 0 || block.1 == 0 {
        return Err(format!("block size {block:?} must be positive"));
    }
    if bytes.len() != rows * cols {
        return Err(format!("{} bytes for a {rows}×{cols} FP8 weight", bytes.len()));
    }
    let [grid_rows, grid_cols] = scale_shape(rows, cols, block);
    if scales.len() != grid_rows * grid_cols {
        return Err(format!("{} scales for a {grid_rows}×{grid_cols} block grid", scales.len()));
    }
    let mut out = Vec::with_capacity(rows * cols);
    if cols == 0 {
        return Ok(out);
    }
    let table = e4m3_table();
    for (r, row) in bytes.chunks_exact(cols).enumerate() {
        let scale_row = &scales[(r / block.0) * grid_cols..][..grid_cols];
        out.extend(row.iter().enumerate().map(|(c, &b)| table[usize::from(b)] * scale_row[c / block.1]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_known_values() {
        let t = e4m3_table();
        assert_eq!(t[0x00], 0.0);
        assert_eq!(t[0x80].to_bits(), (-0.0f32).to_bits());
        assert_eq!(t[0x01], 2f32.powi(-9)); // smallest subnormal
        assert_eq!(t[0x07], 7.0 * 2f32.powi(-9)); // largest subnormal
        assert_eq!(t[0x08], 2f32.powi(-6)); // smallest normal
        assert_eq!(t[0x38], 1.0);
        assert_eq!(t[0x7E], 448.0);
        assert_eq!(t[0xFE], -448.0);
        assert!(t[0x7F].is_nan() && t[0xFF].is_nan());
        assert_eq!(t.iter().filter(|v| v.is_nan()).count(), 2);
    }

    #[test]
    fn partial_blocks_use_their_own_scale() {
        // 3 × 5 weight, 2 × 2 blocks → 2 × 3 grid; byte 0x38 is 1.0.
        let bytes = [0x38u8; 15];
        let scales = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let w = dequantize(&bytes, 3, 5, &scales, (2, 2)).unwrap();
        assert_eq!(&w[..5], &[1.0, 1.0, 2.0, 2.0, 3.0]);
        assert_eq!(&w[10..], &[4.0, 4.0, 5.0, 5.0, 6.0]);
        assert!(dequantize(&bytes, 3, 5, &scales[..5], (2, 2)).is_err());
        assert!(dequantize(&bytes[..14], 3, 5, &scales, (2, 2)).is_err());
    }
}
