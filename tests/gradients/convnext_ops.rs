//! The gradients of the ops ConvNeXt brought (`layernorm`, `pointwise_dense`, `parameter`)
//! and of `prelu`, `groupnorm` and `instancenorm`, against central differences, at odd sizes.

use super::*;
use cnnc::graph::{
    GroupNormAttrs, LayerNormAttrs, PReluAttrs, ParameterAttrs, PointwiseDenseAttrs,
};

#[test]
fn layer_norm_over_channels() {
    let op = Op::LayerNorm(LayerNormAttrs { eps: 1e-5 });
    check_single(&[Shape::spatial(3, 5, 7)], op.clone(), TRAIN, smooth);
    check_single(&[Shape::flat(6)], op, TRAIN, smooth);
}

#[test]
fn pointwise_dense_and_parameter() {
    let dense = PointwiseDenseAttrs {
        units: 5,
        bias: true,
    };
    check_single(
        &[Shape::spatial(3, 2, 7)],
        Op::PointwiseDense(dense),
        TRAIN,
        smooth,
    );
    let parameter = Op::Parameter(ParameterAttrs { init: 1.0 });
    check_single(&[Shape::spatial(3, 2, 4)], parameter, TRAIN, smooth);
}

#[test]
fn prelu_per_channel_and_shared() {
    for shared in [false, true] {
        let op = Op::PRelu(PReluAttrs { shared, init: 0.25 });
        check_single(&[Shape::spatial(3, 5, 3)], op, TRAIN, |r| {
            r.away_from(-1.0, 1.0, &[0.0], 0.05)
        });
    }
}

#[test]
fn group_and_instance_norm() {
    for (groups, affine, instance) in [(3, true, false), (2, false, false), (6, true, true)] {
        let op = Op::GroupNorm(GroupNormAttrs {
            groups,
            eps: 1e-5,
            affine,
            instance,
        });
        check_single(&[Shape::spatial(3, 5, 6)], op, TRAIN, smooth);
    }
}
