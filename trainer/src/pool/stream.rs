//! A weight push's body, streamed: the safetensors layout (8-byte header length, JSON header
//! with each tensor's dtype, shape and byte range, then the tensors' bytes in header order) read
//! one tensor at a time, so sending the policy to a server holds at most one tensor's bytes
//! besides the model, never a second copy of it.

use std::collections::VecDeque;
use std::io::Read;
use tch::{Device, Kind, Tensor};

/// The safetensors dtype name and the kind a tensor is sent as: floats as they are, anything
/// else as f32.
fn dtype_of(kind: Kind) -> (&'static str, Kind, usize) {
    match kind {
        Kind::BFloat16 => ("BF16", Kind::BFloat16, 2),
        Kind::Half => ("F16", Kind::Half, 2),
        Kind::Double => ("F64", Kind::Double, 8),
        _ => ("F32", Kind::Float, 4),
    }
}

/// A [`Read`] over the safetensors serialisation of named tensors.
pub struct SafetensorsReader {
    /// Bytes ready to be read (the header, then the current tensor's).
    ready: VecDeque<u8>,
    /// Tensors not yet turned into bytes, in header order.
    left: VecDeque<Tensor>,
}

impl SafetensorsReader {
    /// The reader of `tensors` (shallow clones of the model's: they are read as they are sent).
    pub fn new(tensors: Vec<(String, Tensor)>) -> Self {
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for (name, t) in &tensors {
            let (dtype, _, size) = dtype_of(t.kind());
            let len = t.numel() * size;
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": dtype, "shape": t.size(), "data_offsets": [offset, offset + len]}),
            );
            offset += len;
        }
        let mut json = serde_json::Value::Object(header).to_string().into_bytes();
        // The data starts 8-byte aligned, as the reference writer pads it.
        json.resize(json.len().div_ceil(8) * 8, b' ');
        let mut ready: VecDeque<u8> = (json.len() as u64).to_le_bytes().into_iter().collect();
        ready.extend(json);
        SafetensorsReader { ready, left: tensors.into_iter().map(|(_, t)| t).collect() }
    }
}

impl Read for SafetensorsReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.ready.is_empty() {
            let Some(t) = self.left.pop_front() else { return Ok(0) };
            let (_, kind, size) = dtype_of(t.kind());
            let cpu = t.detach().to_device(Device::Cpu).to_kind(kind).contiguous();
            let mut bytes = vec![0u8; cpu.numel() * size];
            cpu.f_copy_data_u8(&mut bytes, cpu.numel()).map_err(std::io::Error::other)?;
            self.ready.extend(bytes);
        }
        let n = buf.len().min(self.ready.len());
        for (slot, byte) in buf.iter_mut().zip(self.ready.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::SafetensorsReader;
    use std::io::Read;
    use tch::{Kind, Tensor};

    /// The streamed bytes are a safetensors file the reference reader accepts, holding the same
    /// tensors bit for bit, whatever the read sizes.
    #[test]
    fn streamed_bytes_are_safetensors_of_the_same_tensors() {
        let tensors = vec![
            ("a.weight".to_string(), Tensor::randn([3, 5], (Kind::Float, tch::Device::Cpu))),
            ("b.bias".to_string(), Tensor::randn([7], (Kind::Float, tch::Device::Cpu)).to_kind(Kind::BFloat16)),
            ("c".to_string(), Tensor::from_slice(&[1.5f64, -2.25])),
        ];
        let shallow = tensors.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        let mut reader = SafetensorsReader::new(shallow);
        let mut bytes = Vec::new();
        let mut buf = [0u8; 13];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), 3);
        for (name, t) in &tensors {
            let view = st.tensor(name).unwrap();
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            assert_eq!(view.shape(), shape.as_slice(), "{name}");
            let mut want = vec![0u8; view.data().len()];
            t.contiguous().copy_data_u8(&mut want, t.numel());
            assert_eq!(view.data(), want.as_slice(), "{name}");
        }
    }
}
