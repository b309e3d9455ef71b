//! What libtorch sees: CPU, or CUDA devices with their names.

use serde::Serialize;

/// The compute devices libtorch reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceReport {
    /// Whether libtorch can use CUDA.
    pub cuda_available: bool,
    /// Number of CUDA devices.
    pub cuda_device_count: i64,
    /// Names of the CUDA devices, in index order.
    pub cuda_devices: Vec<String>,
    /// Whether cuDNN is usable.
    pub cudnn_available: bool,
    /// Threads libtorch uses on the CPU.
    pub cpu_threads: i32,
}

impl DeviceReport {
    /// Asks libtorch.
    pub fn probe() -> Self {
        let cuda_available = tch::Cuda::is_available();
        let count = if cuda_available { tch::Cuda::device_count() } else { 0 };
        let cuda_devices = (0..count).map(device_name).collect();
        DeviceReport {
            cuda_available,
            cuda_device_count: count,
            cuda_devices,
            cudnn_available: tch::Cuda::cudnn_is_available(),
            cpu_threads: tch::get_num_threads(),
        }
    }

    /// One line: `CPU (N threads)` or `CUDA: <name> (+ N more)`.
    pub fn summary(&self) -> String {
        match self.cuda_devices.as_slice() {
            [] => format!("CPU ({} threads)", self.cpu_threads),
            [one] => format!("CUDA: {one}"),
            [first, rest @ ..] => format!("CUDA: {first} (+{} more)", rest.len()),
        }
    }
}

/// The CUDA device's name. tch has no binding for it, so ask the driver: its `/proc` entries (in PCI
/// bus order, which matches CUDA's order on single-GPU and bus-ordered machines), then
/// `nvidia-smi`; `cuda:N` when neither answers.
fn device_name(index: i64) -> String {
    proc_gpu_names()
        .or_else(nvidia_smi_names)
        .and_then(|names| names.into_iter().nth(index as usize))
        .unwrap_or_else(|| format!("cuda:{index}"))
}

fn proc_gpu_names() -> Option<Vec<String>> {
    let mut paths: Vec<_> =
        std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let names: Vec<String> = paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p.join("information")).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string())))
        .collect();
    (!names.is_empty()).then_some(names)
}

fn nvidia_smi_names() -> Option<Vec<String>> {
    let out =
        std::process::Command::new("nvidia-smi").args(["--query-gpu=name", "--format=csv,noheader"]).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    (out.status.success() && !names.is_empty()).then_some(names)
}
