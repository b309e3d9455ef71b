//! libtorch's deterministic mode through the shim: the flag reads back as set, and with it on an
//! op that has no deterministic kernel (`put_` without accumulation: duplicate indices race) fails
//! as `torch.use_deterministic_algorithms(True)` makes it fail in Python, and works again when off.

use tch::{Device, Kind, Tensor};

fn put(t: &mut Tensor) -> Result<(), tch::TchError> {
    let index = Tensor::from_slice(&[0i64, 0]);
    let source = Tensor::from_slice(&[1f32, 2.0]);
    t.f_put_(&index, &source, false).map(|_| ())
}

#[test]
fn deterministic_mode_switches_libtorchs_global_flag() {
    let mut t = Tensor::zeros([3], (Kind::Float, Device::Cpu));
    assert!(!rlvr_dist::deterministic(), "off by default");
    put(&mut t).expect("put_ runs with the mode off");
    rlvr_dist::set_deterministic(true);
    assert!(rlvr_dist::deterministic());
    let err = put(&mut t).expect_err("put_ has no deterministic implementation");
    assert!(err.to_string().contains("deterministic"), "{err}");
    rlvr_dist::set_deterministic(false);
    assert!(!rlvr_dist::deterministic());
    put(&mut t).expect("put_ runs again with the mode off");
}
