"""Channels-last convolutions for tuned CPU builds, behind the module's NCHW interface.

NCHW vectorizes a conv's innermost loop over a feature-map row (7 wide at resnet18's
last stage); NHWC puts the output channels there, a multiple of the vector width in
every real network. TVM's ``ConvertLayout`` rewrites the convolutions and carries the
layout through the operators that declare how to (elementwise, pooling, reductions);
before any other operator it transposes back to NCHW and after it forward again.
"""

from __future__ import annotations

import logging

import tvm
from tvm import relax

logger = logging.getLogger(__name__)

CONV_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "OHWI"],
                "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}
"""Data and kernel layouts per operator. On resnet18's 3x3 convs at 512 and 256 channels,
48 trials each at one thread: 1.14 and 1.25 ms in NHWC against 2.98 and 2.87 ms in NCHW
(TVM's auto-scheduler guide recommends NHWC on x86 for the same reason). Transposed
convs stay NCHW: ``ConvertLayout`` would otherwise hand them the NHWC of their input,
which their legalization (TOPI) does not implement."""

_CLIP = tvm.ir.Op.get("relax.clip")
_STACK = tvm.ir.Op.get("relax.stack")


@relax.expr_functor.mutator
class _LayoutAgnosticForms(relax.PyExprMutator):
    """Operators whose layout rule is missing or broken, rewritten into ones that have it.

    - ``clip(x, lo, hi)`` as ``minimum(maximum(x, lo), hi)``: ``relax.clip`` declares no
      layout rule, so ``ConvertLayout`` wrapped every ReLU6 of mobilenetv2 in a transpose
      pair (2.9 of its 7.1 ms in MetaSchedule's table); the binary form fuses into the
      conv before it.
    - ``stack(xs, axis)`` as ``concat([expand_dims(x, axis) ...], axis)``: the layout rule
      of ``relax.stack`` fails inside ``ConvertLayout`` ("Invalid SLayout"), which broke
      ONNX ``Sum`` of several tensors and shufflenet's channel shuffle.
    """

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = self.visit_expr_post_order(call)
        if call.op == _CLIP:
            data, low, high = call.args
            dtype = data.ty.dtype
            return relax.op.minimum(relax.op.maximum(data, relax.const(low.value, dtype)),
                                    relax.const(high.value, dtype))
        if call.op == _STACK and isinstance(call.args[0], relax.Tuple):
            axis = int(call.attrs.axis)
            return relax.op.concat(
                [relax.op.expand_dims(x, axis) for x in call.args[0].fields], axis)
        return call


@tvm.transform.module_pass(opt_level=0, name="mscgym.LayoutAgnosticForms")
class LayoutAgnosticForms:
    """Rewrite the module's Relax functions with :class:`_LayoutAgnosticForms`."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext
                         ) -> tvm.IRModule:
        mutator = _LayoutAgnosticForms(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gvar, mutator.visit_expr(func))
        return mutator.builder_.get()


def to_channels_last(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with its 2-D convolutions channels-last, or unchanged where TVM cannot.

    ``ConvertLayout`` runs every operator's layout rule; where one fails on a graph (a TVM
    bug like ``stack``'s above), the model still builds, in its own layouts, with a warning
    that names the error: channels-last is a speed-up, not a condition of the build.
    """
    try:
        return tvm.transform.Sequential([
            LayoutAgnosticForms(),
            relax.transform.ConvertLayout(CONV_LAYOUTS),
        ])(mod)
    except tvm.error.InternalError as exc:  # a failed check inside a layout rule
        logger.warning("TVM ConvertLayout failed, convolutions stay in the model's layout "
                       "(slower tuned kernels): %s", str(exc).strip().splitlines()[-1])
        return mod
