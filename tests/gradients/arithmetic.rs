//! Tensor–tensor `-` and `/` (`Op::Arithmetic`): equal shapes and a 1×1×C operand broadcast
//! on either side, whose gradient is summed back over the pixels.

use super::*;
use cnnc::graph::ArithmeticOp;

#[test]
fn sub_and_div_of_tensors() {
    let s = Shape::spatial(3, 5, 2);
    let gate = Shape::spatial(1, 1, 2);
    for op in [ArithmeticOp::Sub, ArithmeticOp::Div] {
        for inputs in [[s, s], [s, gate], [gate, s]] {
            // Both operands are drawn away from 0, where `x / y` is steep in `y`.
            check_single(&inputs, Op::Arithmetic(op), TRAIN, |r| {
                r.away_from(-2.0, 2.0, &[0.0], 0.5)
            });
        }
    }
}
