"""Exposing an inner tensor of an ONNX file as an extra output, without the ``onnx`` package.

The keyword models' embedding is the input of their last fully connected layer (the
penultimate vector). Old exports, the shipped ``ubiq-commands-demo`` among them, have only
``logits``; the runtime must not need ``onnx`` (a toolchain dependency) to reach it. An
ONNX file is one protobuf ``ModelProto``, and protobuf parsers merge a repeated embedded
message field: appending ``graph { output { name: "X" type {...} } }`` to the file's bytes
adds ``X`` to the graph's outputs and changes nothing else (every weight, node and the
existing outputs stay bit for bit). :func:`find_embedding_tensor` reads just enough of the
wire format (nodes' inputs, outputs and op types; graph outputs) to name the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

from ubiq.errors import ModelError

__all__ = [
    "EMBEDDING_OUTPUT",
    "embedding_model",
    "find_embedding_tensor",
    "graph_outputs",
    "with_output",
]

EMBEDDING_OUTPUT = "embedding"
"""The output name a keyword model's embedding goes by when its export adds one."""

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_OUTPUT = 1, 12
_NODE_INPUT, _NODE_OUTPUT, _NODE_OP_TYPE = 1, 2, 4
_VALUE_NAME = 1
_FLOAT = 1  # TensorProto.FLOAT
# Ops that pass the class scores through without changing which tensor feeds the layer.
_PASS_THROUGH = {"Flatten", "Reshape", "Squeeze", "Identity", "Softmax", "LogSoftmax", "Cast"}


@dataclass(frozen=True)
class _Node:
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes):
    """``(field number, wire type, value)`` of one message; ``value`` is bytes for
    length-delimited fields, an int otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _FIXED64:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == _FIXED32:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        elif wire == _BYTES:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        yield number, wire, value


def _graph(model: bytes) -> tuple[list[_Node], list[str]]:
    nodes: list[_Node] = []
    outputs: list[str] = []
    for number, wire, value in _fields(model):
        if number != _MODEL_GRAPH or wire != _BYTES:
            continue
        for field, kind, item in _fields(value):  # repeated graph fields merge
            if kind != _BYTES:
                continue
            if field == _GRAPH_NODE:
                parts: dict[int, list[str]] = {_NODE_INPUT: [], _NODE_OUTPUT: [], _NODE_OP_TYPE: []}
                for key, key_kind, text in _fields(item):
                    if key in parts and key_kind == _BYTES:
                        parts[key].append(text.decode("utf-8", "replace"))
                op_type = parts[_NODE_OP_TYPE][0] if parts[_NODE_OP_TYPE] else ""
                nodes.append(_Node(op_type, tuple(parts[_NODE_INPUT]), tuple(parts[_NODE_OUTPUT])))
            elif field == _GRAPH_OUTPUT:
                for key, key_kind, text in _fields(item):
                    if key == _VALUE_NAME and key_kind == _BYTES:
                        outputs.append(text.decode("utf-8", "replace"))
    return nodes, outputs


def graph_outputs(model: bytes) -> list[str]:
    """The names of the graph's outputs, in order.

    Raises:
        ModelError: If the bytes are not a readable ONNX model.
    """
    try:
        return _graph(model)[1]
    except ValueError as error:
        raise ModelError(f"not a readable ONNX model: {error}") from error


def find_embedding_tensor(model: bytes, scores: str | None = None) -> tuple[str, int | None]:
    """The tensor that feeds the last fully connected layer (``Gemm``, or ``MatMul`` with
    an ``Add``) behind the score output.

    Returns:
        ``(name, rank)``: the tensor's name and its rank (2 for a ``Gemm`` input, ``None``
        when the graph does not fix it).

    Args:
        model: The ONNX file's bytes.
        scores: The class-score output (default: the first graph output).

    Raises:
        ModelError: If the bytes are not ONNX, or the scores do not come from a fully
            connected layer (then the model has no penultimate vector to expose).
    """
    try:
        nodes, outputs = _graph(model)
    except ValueError as error:
        raise ModelError(f"not a readable ONNX model: {error}") from error
    if not outputs:
        raise ModelError("the ONNX graph has no outputs")
    producer = {name: node for node in nodes for name in node.outputs}
    tensor = scores or outputs[0]
    for _ in range(len(nodes) + 1):
        node = producer.get(tensor)
        if node is None or not node.inputs:
            break
        if node.op_type in ("Gemm", "MatMul"):
            return node.inputs[0], 2 if node.op_type == "Gemm" else None
        if node.op_type == "Add":
            matmul = next(
                (producer[i] for i in node.inputs if i in producer and producer[i].op_type in
                 ("MatMul", "Gemm")), None,
            )  # fmt: skip
            if matmul is not None:
                return matmul.inputs[0], 2 if matmul.op_type == "Gemm" else None
            break
        if node.op_type not in _PASS_THROUGH:
            break
        tensor = node.inputs[0]
    raise ModelError(
        f"the output {scores or outputs[0]!r} does not come from a fully connected layer "
        "(Gemm or MatMul), so the model has no embedding to expose"
    )


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _message(number: int, payload: bytes) -> bytes:
    return _key(number, _BYTES) + _encode_varint(len(payload)) + payload


def with_output(
    model: bytes, tensor: str, rank: int | None = None, name: str | None = None
) -> bytes:
    """The model with ``tensor`` added as a float graph output.

    Everything else is kept byte for byte. With ``name`` (other than ``tensor``), an
    ``Identity`` node appended to the graph gives the output that name. With ``rank``, the
    output's shape has that many symbolic axes (the ONNX checker wants a shape; the
    runtime infers the sizes either way). An existing output of that name leaves the model
    as it was.

    Raises:
        ModelError: If the bytes are not a readable ONNX model.
    """
    name = name or tensor
    if name in graph_outputs(model):
        return model
    tensor_type = _key(1, _VARINT) + _encode_varint(_FLOAT)  # TypeProto.Tensor.elem_type
    if rank is not None:
        axes = b"".join(_message(1, _message(2, f"{name}_{i}".encode())) for i in range(rank))
        tensor_type += _message(2, axes)  # TypeProto.Tensor.shape: dims with a dim_param
    tensor_type = _message(1, tensor_type)  # TypeProto.tensor_type
    value_info = _message(_VALUE_NAME, name.encode("utf-8")) + _message(2, tensor_type)
    graph = b""
    if name != tensor:
        graph += _message(
            _GRAPH_NODE,
            _message(_NODE_INPUT, tensor.encode("utf-8"))
            + _message(_NODE_OUTPUT, name.encode("utf-8"))
            + _message(3, f"{name}_identity".encode())
            + _message(_NODE_OP_TYPE, b"Identity"),
        )
    graph += _message(_GRAPH_OUTPUT, value_info)
    return model + _message(_MODEL_GRAPH, graph)


def embedding_model(model: bytes) -> bytes:
    """A keyword model with its penultimate vector as a second output named
    :data:`EMBEDDING_OUTPUT` (the model as it is when it already has one).

    Raises:
        ModelError: If the bytes are not ONNX or the scores do not come from a fully
            connected layer.
    """
    if EMBEDDING_OUTPUT in graph_outputs(model):
        return model
    tensor, rank = find_embedding_tensor(model)
    return with_output(model, tensor, rank, EMBEDDING_OUTPUT)
