"""The Relax ops MSCGraph translates, and the roles of their constant operands.

One list serves translation and code generation alike: an op outside it is refused
with an error naming the op and the node, instead of failing deep inside TVM.
"""

from __future__ import annotations

ELEMENTWISE_UNARY = (
    "nn.relu", "nn.gelu", "nn.gelu_tanh", "nn.silu", "sigmoid", "tanh", "exp", "log", "sqrt",
    "rsqrt", "negative", "abs", "erf", "square",
)
ELEMENTWISE_BINARY = ("add", "subtract", "multiply", "divide", "power", "maximum", "minimum")
LAYOUT = (
    "reshape", "permute_dims", "concat", "flatten", "squeeze", "expand_dims", "strided_slice",
    "take", "broadcast_to", "stack",
)
REDUCE = ("mean", "sum", "max", "min")
NN = (
    "nn.conv2d", "nn.max_pool2d", "nn.avg_pool2d", "nn.adaptive_avg_pool2d", "nn.softmax",
    "nn.log_softmax", "nn.layer_norm", "nn.batch_norm", "matmul", "clip", "astype",
    "nn.conv2d_transpose", "nn.avg_pool3d", "nn.pad", "image.resize2d",
)
HOST_OP = "msc.host"  # a call TVM runs between regions, in the stitched graph of a partition
COMPOSITE = ("msc.conv2d_bias", "msc.conv2d_transpose_bias", "msc.linear", "msc.linear_bias",
             "msc.batch_norm")
# Coordinate transformations and nearest roundings of ``image.resize2d`` that every
# codegen reproduces (the names are ONNX Resize's, which Relax keeps).
RESIZE_COORDINATES = ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel",
                      "tf_half_pixel_for_nn")
RESIZE_ROUNDINGS = ("round", "round_prefer_floor", "round_prefer_ceil", "floor", "ceil")

SUPPORTED_OPS = frozenset(
    f"relax.{op}" for op in (*ELEMENTWISE_UNARY, *ELEMENTWISE_BINARY, *LAYOUT, *REDUCE, *NN)
)

_ROLES = {
    "nn.conv2d": (None, "weight"),
    "nn.conv2d_transpose": (None, "weight"),
    "matmul": (None, "weight"),
    "nn.layer_norm": (None, "gamma", "beta"),
    "nn.batch_norm": (None, "gamma", "beta", "mean", "var"),
}


def weight_role(optype: str, position: int) -> str:
    """The role name of the constant at argument ``position`` of an ``optype`` call."""
    roles = _ROLES.get(optype)
    if roles and position < len(roles) and roles[position]:
        return roles[position]
    return f"const{position}"
