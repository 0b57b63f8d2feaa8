//! The gradients of `conv_transpose` (input: a forward conv of the output gradient; weight: a
//! correlation of the input with it; bias: its sum) against central differences: strided with
//! padding and output padding, dilated with asymmetric padding, grouped and depthwise.

use super::*;
use cnnc::graph::ConvTransposeAttrs;

fn conv_transpose(filters: usize, kernel: [usize; 2], stride: usize) -> ConvTransposeAttrs {
    ConvTransposeAttrs {
        filters,
        kernel,
        stride: [stride, stride],
        dilation: [1, 1],
        pad: Padding::default(),
        output_padding: [0, 0],
        groups: 1,
        bias: true,
        same_pad: false,
    }
}

#[test]
fn conv_transpose_with_stride_padding_and_output_padding() {
    let attrs = ConvTransposeAttrs {
        pad: Padding::uniform(1),
        output_padding: [1, 1],
        ..conv_transpose(4, [3, 3], 2)
    };
    let op = Op::ConvTranspose(attrs);
    check_single(&[Shape::spatial(3, 4, 3)], op, TRAIN, smooth);
}

#[test]
fn conv_transpose_with_dilation_and_asymmetric_padding() {
    let attrs = ConvTransposeAttrs {
        stride: [3, 1],
        dilation: [1, 2],
        pad: Padding {
            top: 1,
            bottom: 0,
            left: 2,
            right: 1,
        },
        output_padding: [2, 1],
        ..conv_transpose(3, [2, 3], 3)
    };
    check_single(
        &[Shape::spatial(3, 3, 2)],
        Op::ConvTranspose(attrs),
        TRAIN,
        smooth,
    );
}

#[test]
fn grouped_and_depthwise_conv_transpose() {
    let grouped = ConvTransposeAttrs {
        groups: 2,
        ..conv_transpose(6, [3, 3], 2)
    };
    check_single(
        &[Shape::spatial(3, 3, 4)],
        Op::ConvTranspose(grouped),
        TRAIN,
        smooth,
    );
    let depthwise = ConvTransposeAttrs {
        groups: 3,
        bias: false,
        pad: Padding::uniform(1),
        ..conv_transpose(3, [4, 4], 2)
    };
    check_single(
        &[Shape::spatial(3, 2, 3)],
        Op::ConvTranspose(depthwise),
        TRAIN,
        smooth,
    );
}
