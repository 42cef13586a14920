"""Channels-last convolutions for tuned CPU builds, behind the module's NCHW interface.

NCHW vectorizes a conv's innermost loop over a feature-map row (7 wide at resnet18's
last stage); NHWC puts the output channels there, a multiple of the vector width in
every real network. TVM's ``ConvertLayout`` rewrites the convolutions and carries the
layout through the operators that declare how to (elementwise, pooling, reductions);
before any other operator it transposes back to NCHW and after it forward again.
"""

from __future__ import annotations

import tvm
from tvm import relax

CONV_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "OHWI"]}
"""Data and kernel layouts of the convolutions tuned kernels compute. On resnet18's 3x3
convs at 512 and 256 channels, 48 trials each at one thread: 1.14 and 1.25 ms against
2.98 and 2.87 ms in NCHW (TVM's auto-scheduler guide recommends NHWC on x86 for the same
reason)."""

_CLIP = tvm.ir.Op.get("relax.clip")


@relax.expr_functor.mutator
class _ClipAsMaximumMinimum(relax.PyExprMutator):
    """``clip(x, lo, hi)`` as ``minimum(maximum(x, lo), hi)``.

    ``relax.clip`` declares no layout rule, so ``ConvertLayout`` wrapped every ReLU6 of
    mobilenetv2 in a transpose pair (2.9 of its 7.1 ms in MetaSchedule's table); the
    binary form is layout-agnostic and fuses into the conv before it.
    """

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = self.visit_expr_post_order(call)
        if call.op != _CLIP:
            return call
        data, low, high = call.args
        dtype = data.ty.dtype
        return relax.op.minimum(relax.op.maximum(data, relax.const(low.value, dtype)),
                                relax.const(high.value, dtype))


@tvm.transform.module_pass(opt_level=0, name="mscgym.ClipAsMaximumMinimum")
class ClipAsMaximumMinimum:
    """Rewrite every ``relax.clip`` of the module's Relax functions (see the mutator)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext
                         ) -> tvm.IRModule:
        mutator = _ClipAsMaximumMinimum(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gvar, mutator.visit_expr(func))
        return mutator.builder_.get()


def convert_to_channels_last() -> tvm.transform.Pass:
    """The passes that make a Relax module's 2-D convolutions channels-last."""
    return tvm.transform.Sequential([
        ClipAsMaximumMinimum(),
        relax.transform.ConvertLayout(CONV_LAYOUTS),
    ], name="mscgym.ConvertToChannelsLast")
