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
    /// The CUDA runtime libtorch was built with and loaded (`13.0`), when it is loaded.
    pub cuda_runtime: Option<String>,
    /// The CUDA version the installed NVIDIA driver supports (`12.8`), when there is a driver.
    pub cuda_driver: Option<String>,
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
            cuda_runtime: cuda_runtime_version(),
            cuda_driver: cuda_driver_version(),
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

/// `major.minor` of a CUDA version number (`12080` → `12.8`).
fn cuda_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Calls `int name(int *)` of the shared library `lib` (loaded already with `RTLD_NOLOAD`, or
/// loaded now): the CUDA version getters' shape. `None` when the library or symbol is absent or
/// the call fails.
fn version_from(lib: &str, name: &str, noload: bool) -> Option<i32> {
    let f = symbol(loaded(lib, noload)?, name)?;
    // SAFETY: the symbol is the CUDA API's `cudaError_t f(int *)` / `CUresult f(int *)`, called
    // with a valid out-pointer.
    unsafe {
        let f: extern "C" fn(*mut i32) -> i32 = std::mem::transmute(f);
        let mut version = 0;
        (f(&mut version) == 0).then_some(version)
    }
}

/// The CUDA runtime libtorch loaded (`cudaRuntimeGetVersion` of its `libcudart`).
pub fn cuda_runtime_version() -> Option<String> {
    ["libcudart.so.13", "libcudart.so.12"]
        .iter()
        .find_map(|lib| version_from(lib, "cudaRuntimeGetVersion", true))
        .map(cuda_version)
}

/// The CUDA version the NVIDIA driver supports (`cuDriverGetVersion` of `libcuda.so.1`); `None`
/// without a driver.
pub fn cuda_driver_version() -> Option<String> {
    version_from("libcuda.so.1", "cuDriverGetVersion", false).map(cuda_version)
}

/// Bytes `device` can still give: on the CPU the host's `MemAvailable` (`/proc/meminfo`), on CUDA
/// the device's free memory (`cudaMemGetInfo` of the runtime libtorch loaded; memory libtorch's
/// caching allocator holds counts as used). `None` when it cannot be read.
pub fn available_bytes(device: tch::Device) -> Option<u64> {
    match device {
        tch::Device::Cuda(index) => cuda_free_bytes(index),
        _ => {
            let text = std::fs::read_to_string("/proc/meminfo").ok()?;
            meminfo_available(&text)
        }
    }
}

/// `MemAvailable` of `/proc/meminfo` text, in bytes.
fn meminfo_available(text: &str) -> Option<u64> {
    let value = text.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    value.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kib| kib * 1024)
}

/// Free bytes of CUDA device `index`: `cudaMemGetInfo` with that device current, the caller's
/// current device restored after. `None` when libtorch loaded no CUDA runtime or a call fails.
fn cuda_free_bytes(index: usize) -> Option<u64> {
    let lib = ["libcudart.so.13", "libcudart.so.12"].into_iter().find_map(|lib| loaded(lib, true))?;
    let get = symbol(lib, "cudaGetDevice")?;
    let set = symbol(lib, "cudaSetDevice")?;
    let info = symbol(lib, "cudaMemGetInfo")?;
    // SAFETY: the CUDA runtime API's `cudaError_t cudaGetDevice(int *)`, `cudaSetDevice(int)` and
    // `cudaMemGetInfo(size_t *, size_t *)`, called with valid out-pointers; 0 is cudaSuccess.
    unsafe {
        let get: extern "C" fn(*mut i32) -> i32 = std::mem::transmute(get);
        let set: extern "C" fn(i32) -> i32 = std::mem::transmute(set);
        let info: extern "C" fn(*mut usize, *mut usize) -> i32 = std::mem::transmute(info);
        let mut current = 0;
        if get(&mut current) != 0 || set(index as i32) != 0 {
            return None;
        }
        let (mut free, mut total) = (0usize, 0usize);
        let ok = info(&mut free, &mut total) == 0;
        set(current);
        ok.then_some(free as u64)
    }
}

/// The handle of the shared library `lib` (already loaded, with `noload`), never closed.
fn loaded(lib: &str, noload: bool) -> Option<*mut libc::c_void> {
    let lib = std::ffi::CString::new(lib).ok()?;
    let flags = libc::RTLD_NOW | libc::RTLD_LOCAL | if noload { libc::RTLD_NOLOAD } else { 0 };
    // SAFETY: dlopen with a valid C string; the handle stays open (the library stays as libtorch
    // or the driver needs it).
    let handle = unsafe { libc::dlopen(lib.as_ptr(), flags) };
    (!handle.is_null()).then_some(handle)
}

/// The address of `name` in the library `handle`.
fn symbol(handle: *mut libc::c_void, name: &str) -> Option<*mut libc::c_void> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: dlsym on a handle from dlopen with a valid C string.
    let f = unsafe { libc::dlsym(handle, name.as_ptr()) };
    (!f.is_null()).then_some(f)
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

/// Where a run computes, as recipes and the command line spell it: `cpu`, `cuda` (the first
/// device), `cuda:N`, or `auto` (the first CUDA device when libtorch sees one, else the CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// CUDA when available, else the CPU.
    Auto,
}

impl DeviceSpec {
    /// The libtorch device. `Auto` resolves to CUDA 0 when libtorch sees a CUDA device.
    pub fn device(self) -> tch::Device {
        match self {
            DeviceSpec::Cpu => tch::Device::Cpu,
            DeviceSpec::Cuda(n) => tch::Device::Cuda(n),
            DeviceSpec::Auto => tch::Device::cuda_if_available(),
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "auto" => Ok(DeviceSpec::Auto),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Ok(DeviceSpec::Cuda(n)),
                None => Err(format!("must be cpu, cuda, cuda:N or auto, got {other:?}")),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(0) => f.write_str("cuda"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Auto => f.write_str("auto"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The dtype of a model's parameters and activations, as recipes and the command line spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    /// 32-bit floats.
    #[default]
    F32,
    /// bfloat16, except [`KEEP_F32`]'s parameters.
    Bf16,
}

/// The parameters transformers keeps in f32 in a bf16 model (`_keep_in_fp32_modules`); the model
/// casts them at use.
pub const KEEP_F32: [&str; 3] = ["e_score_correction_bias", "indexer.weights_proj", "indexer.k_norm"];

impl Dtype {
    /// The libtorch kind.
    pub fn kind(self) -> tch::Kind {
        match self {
            Dtype::F32 => tch::Kind::Float,
            Dtype::Bf16 => tch::Kind::BFloat16,
        }
    }

    /// Casts every variable of `vs` to this dtype, except [`KEEP_F32`]'s in bf16.
    pub fn cast(self, vs: &tch::nn::VarStore) {
        if self == Dtype::F32 {
            return;
        }
        for (name, mut var) in vs.variables() {
            if !KEEP_F32.iter().any(|k| name.contains(k)) {
                tch::no_grad(|| var.set_data(&var.to_kind(self.kind())));
            }
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Dtype::F32),
            "bf16" => Ok(Dtype::Bf16),
            other => Err(format!("must be f32 or bf16, got {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mem_available_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   12288000 kB\n";
        assert_eq!(super::meminfo_available(text), Some(12_288_000 * 1024));
        assert_eq!(super::meminfo_available("MemTotal: 1 kB\n"), None);
    }
}
